"""A long always-on live session: is memory flat, does the lag stay bounded, how many distinct pictures per second?

One `LiveSession` (demo model, hop 5, look-ahead 2, nfe 5, `max_lag` as the server's live streams) runs on a
worker thread the way the server runs it, for `--seconds` (default 600): a paced client sends the espeak-ng sentence
in 200 ms pieces, pauses 5 s (the face idles), and again, over and over. The process's resident memory is read
every 5 s. Reported: frames and frames per second, the share of frames rendered (the rest repeat the picture before
while the session catches up), lag of the speech frames (arrival - (first audio byte + input time + 40 ms)), and
resident memory after the first minute, at its highest and at the end, with the slope of a line fitted to the
readings after the first minute.

    python benchmarks/bench_live_soak.py                 # 10 minutes; written to BENCHMARKS.md
    python benchmarks/bench_live_soak.py --seconds 60 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

import imtalker
from bench_live import ASSETS, Inbox, paced_pieces, speech
from common import header, write_section
from imtalker.constants import FPS, LIVE_MAX_LAG_SECONDS

PAUSE_SECONDS = 5.0
RSS_EVERY_SECONDS = 5.0
WARM_UP_SECONDS = 60.0  # readings before this are the allocator settling, not growth


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def soak(seconds: float, samples: np.ndarray) -> dict:
    from imtalker.pipelines import AudioDrivenPipeline
    from imtalker.pipelines.live import LiveSession
    from imtalker.pipelines.streaming import StreamingSession

    pipe = AudioDrivenPipeline.from_pretrained(imtalker.bundled_demo_model())
    source = pipe.prepare_source(ASSETS / "demo_portrait.png")
    inbox = Inbox()
    live = LiveSession(StreamingSession(pipe, source, hop=5, lookahead_frames=2, nfe=5, seed=0,
                                        max_lag=LIVE_MAX_LAG_SECONDS, input_waiting=lambda: inbox.waiting))
    frames = []  # (arrival, rendered, input time)
    clock = time.perf_counter()

    def worker():
        while True:
            try:
                item, arrived_at = inbox.take(timeout=0.04)
            except queue.Empty:
                item, arrived_at = np.zeros(0, np.float32), None
            if item is None:
                batch = live.finish()
            elif item.size:
                batch = live.push(item, arrived_at=arrived_at)
            else:
                batch = live.tick(time.perf_counter() - clock)
            frames.extend((time.perf_counter(), frame.rendered, frame.input_time) for frame in batch)
            if item is None:
                return

    readings = []  # (seconds since start, resident MB)
    next_reading = clock

    def wait_until(moment: float) -> None:
        nonlocal next_reading
        while (now := time.perf_counter()) < moment:
            if now >= next_reading:
                readings.append((now - clock, rss_mb()))
                next_reading += RSS_EVERY_SECONDS
            time.sleep(min(0.01, max(0.0, moment - now)))

    thread = threading.Thread(target=worker)
    thread.start()
    sentences, pushed = [], 0  # (send time of its first piece, its first sample in what was pushed)
    deadline = clock + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        sentences.append((start, pushed))
        for at, piece in paced_pieces(samples):
            wait_until(start + at)
            inbox.put(piece)
            pushed += piece.size
        wait_until(min(time.perf_counter() + PAUSE_SECONDS, deadline))
    inbox.put(None)
    thread.join()
    readings.append((time.perf_counter() - clock, rss_mb()))
    lags = []
    for arrival, _, input_time in frames:
        if input_time is None:
            continue
        position = round(input_time * 16000)
        sent, first = max((s for s in sentences if s[1] <= position), key=lambda s: s[1])
        lags.append(arrival - (sent + (position - first) / 16000 + 1 / FPS))
    span = frames[-1][0] - frames[0][0]
    times, rss = np.array(readings).T
    settled = times >= WARM_UP_SECONDS
    slope = float(np.polyfit(times[settled], rss[settled], 1)[0] * 60) if settled.sum() >= 3 else float("nan")
    return {"seconds": round(time.perf_counter() - clock, 1), "sentences": len(sentences), "frames": len(frames),
            "fps": (len(frames) - 1) / span, "rendered_share": float(np.mean([r for _, r, _ in frames])),
            "speech_frames": len(lags), "median_lag": float(np.median(lags)),
            "p95_lag": float(np.percentile(lags, 95)), "max_lag": float(np.max(lags)),
            "rss_after_warm_up": float(rss[settled][0]) if settled.any() else float("nan"),
            "rss_max": float(rss.max()), "rss_end": float(rss[-1]), "rss_slope_mb_per_min": slope}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the session (default 600)")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    name, samples = speech()
    load_before = os.getloadavg()
    result = soak(args.seconds, samples)
    load_after = os.getloadavg()
    print(json.dumps(result), flush=True)
    command = "python benchmarks/bench_live_soak.py" + (f" --seconds {args.seconds:g}" if args.seconds != 600 else "")
    body = header("Live session over minutes", command)
    body += (f"\nOne always-on `LiveSession` (demo model, hop 5, look-ahead 2, nfe 5, max_lag {LIVE_MAX_LAG_SECONDS:g} s) "
             f"in process for {result['seconds']:.0f} s: the {name} ({samples.size / 16000:.1f} s) sent in 200 ms "
             f"pieces at real-time pace, then {PAUSE_SECONDS:g} s of silence (idle), {result['sentences']} times. "
             f"Resident memory read every {RSS_EVERY_SECONDS:g} s; the slope is fitted after the first "
             f"{WARM_UP_SECONDS:g} s. Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} "
             "(2 cores: above 2, other work shared the CPU).\n\n"
             "| frames | fps | rendered (rest repeat) | speech frames: median lag (s) | p95 | max | RSS after 1 min (MB) "
             "| max | end | slope (MB/min) |\n|---|---|---|---|---|---|---|---|---|---|\n"
             f"| {result['frames']} | {result['fps']:.1f} | {100 * result['rendered_share']:.0f}% | "
             f"{result['median_lag']:.2f} | {result['p95_lag']:.2f} | {result['max_lag']:.2f} | "
             f"{result['rss_after_warm_up']:.0f} | {result['rss_max']:.0f} | {result['rss_end']:.0f} | "
             f"{result['rss_slope_mb_per_min']:+.2f} |\n")
    print(body)
    if not args.no_write:
        write_section("bench_live_soak", body)
        print("written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
