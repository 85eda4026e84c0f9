"""Live avatar latency: a client paced like a microphone sends speech in 200 ms pieces; how late does each frame come?

Speech: an English sentence synthesised by espeak-ng (about 7 s) when it is installed, else the bundled
demo_speech.wav. The bundled demo model (128 px) renders it through a `StreamingSession` on a worker thread fed by a
paced sender thread, the way the server runs a stream (or, with `--server URL`, through a running `imtalker serve`
over WS /v1/stream). Per frame, lag = arrival time - when its audio was sent, which is the first audio byte's time
+ the frame's media time + 40 ms (the frame's own audio). Reported per schedule:

- first frame: lag of the first frame whose audio is speech (not the leading silence);
- median and p95 lag over all frames; lag of the last frame after the last audio was sent;
- sustained fps: frames per second from the first frame to the last;
- interrupt: a second run interrupts after 3 s of audio: time from the interrupt to the first frame of the blend
  back to the source's face.

Always-on sessions (`LiveSession`, WS "idle": true) get their own table: the session starts, nobody speaks for
2 s (idle frames), then the speech is sent as above. Per speech frame, lag = arrival - (first audio byte + the
frame's input time + 40 ms); idle-to-speech: the lag of the first frame whose audio is speech; idle fps: frames per
second before the speech; interrupt -> rest: interrupt after 3 s of speech -> first frame back to rest.

    python benchmarks/bench_live.py                    # both schedules, in process; written to BENCHMARKS.md
    python benchmarks/bench_live.py --server ws://127.0.0.1:8000 --no-write
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import imtalker
from common import header, median_seconds, write_section
from imtalker.constants import FPS, LIVE_MAX_LAG_SECONDS, SAMPLE_RATE, SAMPLES_PER_FRAME
from imtalker.io.audio import load_audio

PIECE_SECONDS = 0.2
INTERRUPT_AFTER_SECONDS = 3.0
SENTENCE = ("Hello! I am a small talking avatar. I can answer you while you are still listening, "
            "and I stop talking as soon as you interrupt me.")
ASSETS = Path(imtalker.__file__).parent / "assets"
SCHEDULES = [  # (label, session / start-message options); hop schedules catch up as the server's do
    ("2 s chunks (default)", {}),
    ("hop 5, look-ahead 2", {"hop": 5, "lookahead": 2, "max_lag": LIVE_MAX_LAG_SECONDS}),
    ("hop 5, look-ahead 2, nfe 5", {"hop": 5, "lookahead": 2, "nfe": 5, "max_lag": LIVE_MAX_LAG_SECONDS}),
]
ALWAYS_ON = [  # (label, render workers, max_lag)
    ("one render thread, no catching up (before)", 1, None),
    (f"2 render workers, catching up past {LIVE_MAX_LAG_SECONDS:g} s (default)", 2, LIVE_MAX_LAG_SECONDS),
]


def speech() -> tuple[str, np.ndarray]:
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sentence.wav"
            subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), SENTENCE], check=True, capture_output=True)
            return "espeak-ng sentence", load_audio(path)
    return "demo_speech.wav", load_audio(ASSETS / "demo_speech.wav")


def paced_pieces(samples: np.ndarray):
    """(send time, piece) for 200 ms pieces, sent at the pace a microphone makes them; the first at time 0."""
    step = int(PIECE_SECONDS * SAMPLE_RATE)
    return [(k * PIECE_SECONDS, samples[start:start + step]) for k, start in enumerate(range(0, samples.size, step))]


def send_paced(inbox: Inbox, samples: np.ndarray, interrupt_at: float | None, interrupt_requested,
               events: dict) -> tuple[float, float]:
    """Put 200 ms pieces on a worker's inbox at real-time pace; at `interrupt_at` s ask for an interrupt and stop.
    Returns (time of the first piece, time of the last)."""
    start = time.perf_counter()
    for at, piece in paced_pieces(samples):
        time.sleep(max(0.0, start + at - time.perf_counter()))
        if interrupt_at is not None and at >= interrupt_at:
            events["interrupt"] = time.perf_counter()
            interrupt_requested.set()
            inbox.put(np.zeros(0, np.float32))  # wake the worker
            break
        inbox.put(piece)
    return start, time.perf_counter()


class Inbox:
    """A worker's audio queue, as the server's: each piece with when it came; `take` hands over all that waits."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()

    def put(self, item) -> None:
        self._queue.put((time.monotonic(), item))

    @property
    def waiting(self) -> bool:
        """Whether anything waits to be taken (`StreamingSession(input_waiting=...)`)."""
        return bool(self._queue.qsize())

    def take(self, timeout: float | None = None) -> tuple:
        """(audio waiting, joined; when its first piece came), or (None, None) for the end and an empty array for a
        wake-up. A worker that fell behind gives its session the whole backlog with that time, so the session knows
        how late it is and catches up. Raises queue.Empty after `timeout` with nothing there."""
        arrived_at, item = self._queue.get(timeout=timeout)
        if item is None or not item.size:
            return item, None
        pieces = [item]
        while self._queue.qsize() and self._queue.queue[0][1] is not None and self._queue.queue[0][1].size:
            pieces.append(self._queue.get_nowait()[1])
        return np.concatenate(pieces), arrived_at

    def drop_speech(self) -> None:
        """Drop the audio waiting (up to the end marker), as the server drops speech sent before an interrupt."""
        while self._queue.qsize() and self._queue.queue[0][1] is not None:
            self._queue.get_nowait()


def in_process(pipe, source, samples: np.ndarray, options: dict, interrupt_at: float | None,
               render_workers: int | None = None) -> dict:
    """Run one paced stream through a StreamingSession on a worker thread; arrival times per frame."""
    from imtalker.pipelines.streaming import StreamingSession

    session_options = {"seed": 0, "nfe": options.get("nfe", 10), "render_workers": render_workers,
                       "max_lag": options.get("max_lag")}
    if "hop" in options:
        session_options.update(hop=options["hop"], lookahead_frames=options["lookahead"])
    inbox = Inbox()
    arrivals, rendered, events = {}, {}, {}
    interrupt_requested = threading.Event()
    session = StreamingSession(pipe, source, input_waiting=lambda: inbox.waiting,
                               interrupt_waiting=lambda: (interrupt_requested.is_set()
                                                          and "shown_at_interrupt" not in events),
                               **session_options)

    def record(frame) -> None:
        arrivals[frame.index] = time.perf_counter()
        rendered[frame.index] = frame.rendered
        if frame.index >= events.get("shown_at_interrupt", float("inf")):
            events.setdefault("first_blend", arrivals[frame.index])

    def worker():
        handled = False
        while True:
            item, arrived_at = inbox.take()
            if interrupt_requested.is_set() and not handled:
                handled = True
                events["shown_at_interrupt"] = session.frames_done
                # the blend's frames come from this iterator, or (input waiting) from the next call's
                for frame in session.interrupt():
                    record(frame)
                if item is not None:
                    continue  # speech queued before the interrupt: dropped, as the server drops it
            frames = session.finish() if item is None else session.push(item, arrived_at=arrived_at)
            for frame in frames:
                record(frame)
                if interrupt_requested.is_set() and not handled:
                    break
            if item is None:
                return

    thread = threading.Thread(target=worker)
    thread.start()
    start, end_sent = send_paced(inbox, samples, interrupt_at, interrupt_requested, events)
    inbox.put(None)
    thread.join()
    return {"start": start, "end_sent": end_sent, "arrivals": arrivals, "rendered": rendered, "events": events}


def over_websocket(url: str, samples: np.ndarray, options: dict, interrupt_at: float | None) -> dict:
    """The same through a running server: the sender paces the PCM, this thread reads the frames."""
    from websockets.sync.client import connect

    from imtalker.apps.server.render import unpack_frame

    portrait = base64.b64encode((ASSETS / "demo_portrait.png").read_bytes()).decode()
    arrivals, rendered, events = {}, {}, {}
    headers = {"X-API-Key": os.environ["IMTALKER_API_KEY"]} if os.environ.get("IMTALKER_API_KEY") else {}
    with connect(f"{url.rstrip('/')}/v1/stream", additional_headers=headers, max_size=None, open_timeout=60) as ws:
        ws.send(json.dumps({"type": "start", "portrait": portrait, "sample_rate": SAMPLE_RATE,
                            "options": {"seed": 0, **options}}))
        ready = json.loads(ws.recv(timeout=120))
        assert ready["type"] == "ready", ready
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
        times = {}

        def sender():
            times["start"] = time.perf_counter()
            for at, piece in paced_pieces(pcm):
                time.sleep(max(0.0, times["start"] + at - time.perf_counter()))
                if interrupt_at is not None and at >= interrupt_at:
                    events["interrupt"] = time.perf_counter()
                    ws.send(json.dumps({"type": "interrupt"}))
                    break
                ws.send(piece.tobytes())
            times["end_sent"] = time.perf_counter()
            ws.send(json.dumps({"type": "end"}))

        thread = threading.Thread(target=sender)
        thread.start()
        while True:
            message = ws.recv(timeout=300)
            now = time.perf_counter()
            if isinstance(message, bytes):
                frame_header = unpack_frame(message)[0]
                index = frame_header["index"]
                arrivals[index] = now
                rendered[index] = not frame_header.get("repeated", False)
                if "shown_at_interrupt" in events and index >= events["shown_at_interrupt"]:
                    events.setdefault("first_blend", now)
                continue
            reply = json.loads(message)
            if reply["type"] == "interrupted":
                events["shown_at_interrupt"] = reply["frames_shown"]
                continue
            assert reply["type"] == "done", reply
            break
        thread.join()
    return {"start": times["start"], "end_sent": times["end_sent"], "arrivals": arrivals, "rendered": rendered,
            "events": events}


IDLE_LEAD_SECONDS = 2.0


def always_on(pipe, source, samples: np.ndarray, interrupt_at: float | None, render_workers: int | None = None,
              max_lag: float | None = None) -> dict:
    """A LiveSession on a worker thread that ticks its clock whenever no speech waits (as the server's does), 2 s of
    idle, then the speech paced; arrival time and input time per frame."""
    from imtalker.pipelines.live import LiveSession
    from imtalker.pipelines.streaming import StreamingSession

    inbox = Inbox()
    live = LiveSession(StreamingSession(pipe, source, hop=5, lookahead_frames=2, nfe=5, seed=0,
                                        render_workers=render_workers, max_lag=max_lag,
                                        input_waiting=lambda: inbox.waiting,
                                        interrupt_waiting=lambda: (interrupt_requested.is_set()
                                                                   and "shown_at_interrupt" not in events)))
    frames, events = [], {}  # (arrival, index, input time, rendered)
    interrupt_requested = threading.Event()

    def record(frame) -> None:
        frames.append((time.perf_counter(), frame.index, frame.input_time, frame.rendered))
        if frame.index >= events.get("shown_at_interrupt", float("inf")):
            events.setdefault("first_rest", frames[-1][0])

    def worker():
        clock, handled = time.perf_counter(), False
        while True:
            try:
                item, arrived_at = inbox.take(timeout=0.04)
            except queue.Empty:
                item, arrived_at = np.zeros(0, np.float32), None
            if interrupt_requested.is_set() and not handled:
                handled = True
                events["shown_at_interrupt"] = live.session.frames_done
                inbox.drop_speech()  # queued speech is dropped, as the server does
                # the frames back to rest come from this iterator, or (input waiting) from the next call's
                for frame in live.interrupt():
                    record(frame)
                continue
            if item is None:
                batch = live.finish()
            elif item.size:
                batch = live.push(item, arrived_at=arrived_at)
            else:
                batch = live.tick(time.perf_counter() - clock)
            for frame in batch:
                record(frame)
                if interrupt_requested.is_set() and not handled:
                    break
            if item is None:
                return

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(IDLE_LEAD_SECONDS)
    start, end_sent = send_paced(inbox, samples, interrupt_at, interrupt_requested, events)
    if interrupt_at is not None:
        time.sleep(1.0)  # idle on after the interrupt
    inbox.put(None)
    thread.join()
    return {"start": start, "end_sent": end_sent, "frames": frames, "events": events}


def summarise_always_on(run: dict, samples: np.ndarray) -> dict:
    frames = run["frames"]
    idle = [at for at, _, _, _ in frames if at < run["start"]]
    speech = [(at, t) for at, _, t, _ in frames if t is not None]
    span = frames[-1][0] - frames[0][0]
    lags = np.array([at - (run["start"] + t + 1 / FPS) for at, t in speech])
    loud = np.array([np.sqrt(np.mean(samples[max(0, round(t * SAMPLE_RATE)):round(t * SAMPLE_RATE) + SAMPLES_PER_FRAME]
                                     ** 2) + 1e-12) for _, t in speech])
    first = int(np.argmax(loud > 0.1 * loud.max()))
    return {"idle_frames": len(idle), "idle_fps": len(idle) / IDLE_LEAD_SECONDS, "speech_frames": len(speech),
            "idle_to_speech": float(lags[first]), "median_lag": float(np.median(lags)),
            "p95_lag": float(np.percentile(lags, 95)), "end_lag": speech[-1][0] - run["end_sent"],
            "fps": (len(frames) - 1) / span, "rendered": float(np.mean([r for _, _, _, r in frames]))}


def summarise(run: dict, samples: np.ndarray) -> dict:
    arrivals = run["arrivals"]
    indices = sorted(arrivals)
    lags = np.array([arrivals[i] - (run["start"] + i / FPS + 1 / FPS) for i in indices])
    loud = np.array([np.sqrt(np.mean(samples[i * SAMPLES_PER_FRAME:(i + 1) * SAMPLES_PER_FRAME] ** 2) + 1e-12)
                     for i in indices])
    first_speech = int(np.argmax(loud > 0.1 * loud.max()))
    span = arrivals[indices[-1]] - arrivals[indices[0]]
    return {"frames": len(indices), "rendered": float(np.mean(list(run["rendered"].values()))),
            "first_speech_frame": indices[first_speech],
            "first_speech_lag": float(lags[first_speech]), "first_frame_after_start": arrivals[indices[0]] - run["start"],
            "median_lag": float(np.median(lags)), "p95_lag": float(np.percentile(lags, 95)),
            "end_lag": arrivals[indices[-1]] - run["end_sent"], "fps": (len(indices) - 1) / span if span > 0 else 0.0}


def per_hop_costs(pipe, source) -> list[tuple[str, float, float]]:
    """(step, ms per 2 s chunk, ms per hop of 5 frames): what each schedule costs per step, median of 5.

    The feature window is context (50) + the step + look-ahead (5 for chunks, 2 for hops) frames; the generator
    samples one 10 + 50 frame window per step either way (cfg 3: two passes per Euler step); the renderer makes the
    step's frames. wav2vec2-base (published size, random weights) shows what the published front end would cost.
    """
    from transformers import Wav2Vec2Config

    from imtalker.features import StreamingFeatures
    from imtalker.models.audio import AudioEncoder
    from imtalker.sampling import HopSampler, SamplingOptions

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32)

    def encode_ms(encoder, context, frames, lookahead):
        features = StreamingFeatures(encoder, context)
        features.append(audio)
        start = 100
        return 1000 * median_seconds(lambda: features.encode(start, start + frames, start + frames + lookahead), 5)[0]

    def sample_ms(nfe, frames, lookahead):
        sampler = HopSampler(pipe.generator, source.state.motion, SamplingOptions(3.0, nfe, 0))
        heard = torch.zeros(1, min(50, frames + lookahead), pipe.generator.config.audio_dim)
        return 1000 * median_seconds(lambda: sampler.step(heard, frames), 5)[0]

    def render_ms(frames):
        motion = source.state.motion.expand(frames, -1)
        return 1000 * median_seconds(lambda: list(pipe.render_frames(source, motion, 8)), 3)[0]

    def pool_render_ms(frames):  # as a session renders: batches of 8 per worker, two single-threaded workers
        pool, motion = pipe.render_pool(2), source.state.motion.expand(frames, -1)

        def render():
            for chunk in motion.split(16):
                for _, future in pool.submit(source, chunk):
                    future.result()
        return 1000 * median_seconds(render, 3)[0]

    torch.manual_seed(0)
    wav2vec2 = AudioEncoder(Wav2Vec2Config()).eval()
    return [
        ("features, demo log-mel, context 50", encode_ms(pipe.audio_encoder, 50, 50, 5),
         encode_ms(pipe.audio_encoder, 50, 5, 2)),
        ("features, wav2vec2-base, context 50", encode_ms(wav2vec2, 50, 50, 5), encode_ms(wav2vec2, 50, 5, 2)),
        ("features, wav2vec2-base, context 25", encode_ms(wav2vec2, 25, 50, 5), encode_ms(wav2vec2, 25, 5, 2)),
        ("generator, nfe 10", sample_ms(10, 50, 5), sample_ms(10, 5, 2)),
        ("generator, nfe 5", sample_ms(5, 50, 5), sample_ms(5, 5, 2)),
        ("renderer (batches of 8)", render_ms(50), render_ms(5)),
        ("renderer, 2 single-threaded workers (a session's default)", pool_render_ms(50), pool_render_ms(5)),
    ]


def published_size_hop_costs() -> list[tuple[str, float]]:
    """(step, ms per hop of 5) for the published-size generator and renderer (random weights, fp32, torch's threads):
    what a live session of the published model costs per 200 ms on this CPU."""
    from imtalker.config import GeneratorConfig, RendererConfig
    from imtalker.models.generator import MotionGenerator
    from imtalker.models.renderer import IMTRenderer
    from imtalker.sampling import HopSampler, SamplingOptions

    torch.manual_seed(0)
    generator = MotionGenerator(GeneratorConfig()).eval()
    renderer = IMTRenderer(RendererConfig()).eval()
    with torch.inference_mode():
        state = renderer.encode_source(torch.rand(1, 3, 512, 512))
        motion = state.motion.expand(5, -1)
        sampler = HopSampler(generator, state.motion, SamplingOptions(3.0, 5, 0))
        heard = torch.zeros(1, 7, generator.config.audio_dim)
        return [("generator (published size), nfe 5, cfg 3", 1000 * median_seconds(lambda: sampler.step(heard, 5), 5)[0]),
                ("renderer (published size, 512 px), 5 frames", 1000 * median_seconds(lambda: renderer.render(state, motion),
                                                                                    2)[0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="ws://host:port of a running `imtalker serve` (else in process)")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-published", action="store_true", help="skip the published-size per-hop costs (~1 min)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="the in-process pipeline's backend; onnxruntime writes its own section (schedules only)")
    parser.add_argument("--onnx-dir", help="exported graphs for --backend onnxruntime (default: exported on first use)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name, samples = speech()
    load_before = os.getloadavg()
    pipe = source = None
    if not args.server:
        from imtalker.pipelines import AudioDrivenPipeline

        pipe = AudioDrivenPipeline.from_pretrained(imtalker.bundled_demo_model(), backend=args.backend,
                                                   onnx_dir=args.onnx_dir)
        source = pipe.prepare_source(ASSETS / "demo_portrait.png")
        list(pipe.render_frames(source, source.state.motion.expand(8, -1)))  # warm-up
        from imtalker.pipelines.streaming import StreamingSession

        list(StreamingSession(pipe, source, hop=5, nfe=5, seed=0).idle(SAMPLE_RATE))  # the generator's, too
    rows = []
    for label, options in SCHEDULES:
        def run(interrupt_at):
            if args.server:
                return over_websocket(args.server, samples, options, interrupt_at)
            return in_process(pipe, source, samples, options, interrupt_at)

        summary = summarise(run(None), samples)
        interrupted = run(INTERRUPT_AFTER_SECONDS)
        events = interrupted["events"]
        summary["interrupt"] = events["first_blend"] - events["interrupt"] if "first_blend" in events else float("nan")
        rows.append((label, summary))
        print(label, json.dumps(summary), flush=True)
    live_rows = []
    for label, workers, max_lag in [] if args.server else ALWAYS_ON:
        live = summarise_always_on(always_on(pipe, source, samples, None, workers, max_lag), samples)
        events = always_on(pipe, source, samples, INTERRUPT_AFTER_SECONDS, workers, max_lag)["events"]
        live["interrupt"] = events["first_rest"] - events["interrupt"] if "first_rest" in events else float("nan")
        live_rows.append((label, live))
        print("always-on", label, json.dumps(live), flush=True)
    torch_in_process = not args.server and args.backend == "torch"
    costs = per_hop_costs(pipe, source) if torch_in_process else []
    published = published_size_hop_costs() if torch_in_process and not args.no_published else []
    load_after = os.getloadavg()
    where = f"over WS to {args.server}" if args.server else "in process (StreamingSession on a worker thread)"
    backend = "" if args.server or args.backend == "torch" else ", onnxruntime backend"
    command = "python benchmarks/bench_live.py" + (f" --server {args.server}" if args.server else "") + (
        f" --threads {args.threads}" if args.threads else "") + (" --backend onnxruntime" if backend else "")
    body = header("Live schedule" + backend, command)
    body += (f"\nDemo model (128 px), cfg 3, seed 0, {where}; speech: {name}, {samples.size / SAMPLE_RATE:.1f} s, "
             f"sent in {PIECE_SECONDS * 1000:.0f} ms pieces at real-time pace. Lag of a frame: arrival - (first "
             "audio byte + its media time + 40 ms). First speech frame: the lag of the first frame whose audio is "
             "speech. End: last frame's arrival - last audio sent. Interrupt: interrupt after "
             f"{INTERRUPT_AFTER_SECONDS:g} s of audio -> first blend frame. Load average before / after: "
             f"{load_before[0]:.1f} / {load_after[0]:.1f} (2 cores: above 2, other work shared the CPU and the "
             "timings are pessimistic).\n\n"
             "Rendered: the share of frames drawn; the rest repeat the picture before while a hop schedule catches up "
             f"(`max_lag` {LIVE_MAX_LAG_SECONDS:g} s, as the server's live streams).\n\n"
             "| schedule | frames | rendered | first speech frame lag (s) | median lag (s) | p95 lag (s) | end lag (s) | "
             "sustained fps | interrupt -> blend (s) |\n|---|---|---|---|---|---|---|---|---|\n")
    for label, s in rows:
        body += (f"| {label} | {s['frames']} | {100 * s['rendered']:.0f}% | {s['first_speech_lag']:.2f} | "
                 f"{s['median_lag']:.2f} | {s['p95_lag']:.2f} | {s['end_lag']:.2f} | {s['fps']:.1f} | "
                 f"{s['interrupt']:.2f} |\n")
    if live_rows:
        body += ("\nAlways-on session (`LiveSession`; WS `\"idle\": true`), hop 5, look-ahead 2, nfe 5, in process: "
                 f"{IDLE_LEAD_SECONDS:g} s of idle, then the same speech. Lags as above, from each frame's input time."
                 "\n\n| rendering | idle frames (fps) before speech | idle-to-speech: first speech frame lag (s) | "
                 "median lag (s) | p95 lag (s) | end lag (s) | fps | rendered | interrupt -> rest (s) |\n"
                 "|---|---|---|---|---|---|---|---|---|\n")
        for label, live in live_rows:
            body += (f"| {label} | {live['idle_frames']} ({live['idle_fps']:.1f}) | {live['idle_to_speech']:.2f} | "
                     f"{live['median_lag']:.2f} | {live['p95_lag']:.2f} | {live['end_lag']:.2f} | "
                     f"{live['fps']:.1f} | {100 * live['rendered']:.0f}% | {live['interrupt']:.2f} |\n")
    if costs:
        body += ("\nCost of one step, in process (ms, median of 5; a hop must cost under 200 ms to keep up, a chunk "
                 "under 2000 ms):\n\n| step | per 2 s chunk | per hop of 5 |\n|---|---|---|\n")
        body += "".join(f"| {step} | {chunk:.0f} | {hop:.0f} |\n" for step, chunk, hop in costs)
    if published:
        body += ("\nPublished-size networks (random weights, fp32) per hop of 5 frames on this CPU (wav2vec2-base is in "
                 "the table above):\n\n| step | ms per hop of 5 |\n|---|---|\n")
        body += "".join(f"| {step} | {ms:.0f} |\n" for step, ms in published)
    print(body)
    if not args.no_write:
        write_section("bench_live/onnxruntime" if backend else "bench_live", body)
        print("written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
