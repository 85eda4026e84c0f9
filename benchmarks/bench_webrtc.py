"""A WebRTC call as a caller makes it: how long after the caller speaks does the avatar's face and voice come back?

`imtalker serve` (the bundled demo model, each backend in turn) runs in a subprocess on a free port; an aiortc client
in this process offers to POST /v1/webrtc with a microphone track paced at real time: 2 s of silence, then speech (an
espeak-ng sentence, else the bundled demo_speech.wav), then 1 s of silence, then it hangs up. The server sends the
always-on session back as a video track and an audio track (the caller's speech where the face says it). Per call:

- first picture: offer posted -> first video frame received;
- speech -> voice back: the first caller sample above the loudness threshold leaving the microphone -> the first
  avatar audio packet above it arriving (the whole path: resampling, features, motion, frames, Opus both ways and
  aiortc's receiving jitter buffer);
- A/V skew: seconds of avatar audio received by the time each picture arrives, minus that picture's media time
  (median, and its spread from the 5th to the 95th percentile): a receiver plays both by their RTP timestamps, and
  the skew says how far apart they travel;
- fps: pictures per second while the speech plays;
- rendered: the pictures not repeating the one before (a late hop repeats pictures to catch up).

Calls run on the loopback host, so client and server share the 2 cores.

    python benchmarks/bench_webrtc.py     # both backends x hop 5 / look-ahead 2 and hop 3 / look-ahead 1, 3 calls each
    python benchmarks/bench_webrtc.py --calls 1 --backends torch --schedules 5:2 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fractions
import os
import statistics
import time

import numpy as np

from bench_live import ASSETS, speech
from common import ServeProcess, header, write_section

RATE = 48000  # the caller's microphone
PTIME = 0.02
SILENCE_BEFORE, SILENCE_AFTER = 2.0, 1.0
LOUD = 0.05  # of full scale: speech, not the codec's noise floor
OPTIONS = {"seed": 0, "nfe": 5}  # and each schedule's hop and lookahead


def microphone(samples: np.ndarray):
    """An aiortc audio track that plays `samples` (48 kHz int16) at real time; `.start` is when its first
    20 ms left (perf_counter)."""
    import av
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

    class Microphone(AudioStreamTrack):
        def __init__(self):
            super().__init__()
            self.sent, self.start = 0, None

        async def recv(self):
            if self.readyState != "live":
                raise MediaStreamError
            step = round(PTIME * RATE)
            if self.start is None:
                self.start = time.perf_counter()
            else:
                await asyncio.sleep(self.start + self.sent / RATE - time.perf_counter())
            piece = samples[self.sent:self.sent + step]
            piece = np.concatenate([piece, np.zeros(step - piece.size, np.int16)])
            frame = av.AudioFrame.from_ndarray(piece[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = RATE, self.sent, fractions.Fraction(1, RATE)
            self.sent += step
            return frame

    return Microphone()


async def call(url: str, words: np.ndarray, options: dict) -> dict:
    """One call: silence, the words, silence, hang up; what arrived when."""
    import httpx
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    at_48k = np.repeat(words, RATE // 16000)  # the caller's words at the microphone's rate
    pcm = (np.clip(at_48k, -1, 1) * 32767).astype(np.int16)
    samples = np.concatenate([np.zeros(round(SILENCE_BEFORE * RATE), np.int16), pcm,
                              np.zeros(round(SILENCE_AFTER * RATE), np.int16)])
    mic = microphone(samples)
    pc = RTCPeerConnection()
    pc.addTrack(mic)
    pc.addTransceiver("video", direction="recvonly")
    got = {"video": [], "audio": []}  # (arrival, frame)

    async def read(track):
        try:
            while True:
                got[track.kind].append((time.perf_counter(), await track.recv()))
        except MediaStreamError:
            pass

    readers = []
    pc.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))
    await pc.setLocalDescription(await pc.createOffer())
    portrait = base64.b64encode((ASSETS / "demo_portrait.png").read_bytes()).decode()
    posted = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as client:
        reply = await client.post(f"{url}/v1/webrtc", json={"type": "offer", "sdp": pc.localDescription.sdp,
                                                             "portrait": portrait, "options": options})
    reply.raise_for_status()
    answer = reply.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    while mic.start is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(samples.size / RATE - (time.perf_counter() - mic.start))
    await pc.close()
    for reader in readers:
        reader.cancel()
    first_loud = int(np.argmax(np.abs(samples) > LOUD * 32768))
    return {"posted": posted, "spoken_at": mic.start + first_loud / RATE, "speech_seconds": pcm.size / RATE, **got}


def summarise(result: dict) -> dict:
    video, audio = result["video"], result["audio"]
    loud_at = next((at for at, frame in audio if np.abs(frame.to_ndarray()).max() > LOUD * 32768), None)
    seconds_of_audio, skew, pending = 0.0, [], iter(audio)
    packet = next(pending, None)
    for k, (at, _) in enumerate(video):
        while packet is not None and packet[0] <= at:
            seconds_of_audio += packet[1].samples / packet[1].sample_rate
            packet = next(pending, None)
        skew.append(seconds_of_audio - (k + 1) / 25)
    skew = np.array(skew[10:])
    speaking = [at for at, _ in video if result["spoken_at"] <= at <= result["spoken_at"] + result["speech_seconds"]]
    pictures = [frame.to_ndarray(format="rgb24") for _, frame in video]
    changed = sum(not np.array_equal(a, b) for a, b in zip(pictures, pictures[1:]))
    return {"first_picture": video[0][0] - result["posted"],
            "voice_back": loud_at - result["spoken_at"] if loud_at is not None else float("nan"),
            "skew_median": float(np.median(skew)),
            "skew_spread": float(np.percentile(skew, 95) - np.percentile(skew, 5)),
            "fps": (len(speaking) - 1) / (speaking[-1] - speaking[0]) if len(speaking) > 1 else float("nan"),
            "rendered": changed / max(1, len(pictures) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3, help="calls per backend (the table shows their median)")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"])
    parser.add_argument("--schedules", nargs="+", default=["5:2", "3:1"], metavar="HOP:LOOKAHEAD",
                        help="live schedules to call with (the offer's hop and lookahead options)")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    schedules = [tuple(int(n) for n in schedule.split(":")) for schedule in args.schedules]
    name, words = speech()
    load_before = os.getloadavg()
    rows = []
    for backend in args.backends:
        server = ServeProcess("--backend", backend, start_timeout=600)  # onnxruntime exports on first use
        try:
            for hop, lookahead in schedules:
                options = {**OPTIONS, "hop": hop, "lookahead": lookahead}
                calls = [summarise(asyncio.run(call(server.url, words, options))) for _ in range(args.calls)]
                for summary in calls:
                    print(backend, hop, lookahead, {key: round(value, 3) for key, value in summary.items()},
                          flush=True)
                rows.append((backend, hop, lookahead, [c["voice_back"] for c in calls],
                             {key: statistics.median(c[key] for c in calls) for key in calls[0]}))
        finally:
            server.stop()
    load_after = os.getloadavg()
    command = "python benchmarks/bench_webrtc.py" + (f" --calls {args.calls}" if args.calls != 3 else "") + (
        f" --schedules {' '.join(args.schedules)}" if args.schedules != ["5:2", "3:1"] else "")
    body = header("WebRTC call, CPU", command)
    body += (f"\nDemo model (128 px) through `imtalker serve --backend ...` in a subprocess, an aiortc caller in the "
             f"benchmark's process on the same host (they share the 2 cores); options {OPTIONS} and each row's hop "
             f"and look-ahead. The caller's microphone: {SILENCE_BEFORE:g} s of silence, then speech ({name}, "
             f"{words.size / 16000:.1f} s), then {SILENCE_AFTER:g} s of silence. Median of {args.calls} calls per row "
             "(a server's first call includes its warm-up: the first picture's spread). Speech -> voice back: the "
             "first loud sample leaving the caller's microphone -> the avatar's first loud audio arriving (features, "
             "motion, frames, Opus both ways and aiortc's jitter buffer included). A/V skew: avatar audio received "
             "by each picture's arrival minus the picture's media time (median; 5th-95th percentile spread). "
             f"Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f}.\n\n"
             "| backend | hop, look-ahead | first picture (s) | speech -> voice back (s) | each call (s) "
             "| A/V skew (s) | skew spread (s) | fps while speaking | pictures rendered |\n|---|---|---|---|---|---|---|---|---|\n")
    for backend, hop, lookahead, each, s in rows:
        body += (f"| {backend} | {hop}, {lookahead} | {s['first_picture']:.2f} | {s['voice_back']:.2f} | "
                 f"{', '.join(f'{v:.2f}' for v in each)} | {s['skew_median']:.2f} | {s['skew_spread']:.2f} | "
                 f"{s['fps']:.1f} | {100 * s['rendered']:.0f}% |\n")
    print(body)
    if not args.no_write:
        write_section("bench_webrtc", body)
        print("written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
