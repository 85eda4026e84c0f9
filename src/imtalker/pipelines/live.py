"""Always-on live session: frames at 25 fps from the moment it starts, speech when it comes, idle motion between.

    session = StreamingSession(pipe, pipe.prepare_source("face.jpg"), hop=5, nfe=5, seed=0)   # 16 kHz audio
    live = LiveSession(session)
    start = time.monotonic()
    while talking:
        for frame in live.push(samples):                          # speech as it comes (16 kHz)
            play(frame.timestamp, frame.image, frame.audio)
        for frame in live.tick(now=time.monotonic() - start):     # whenever no speech is waiting: idles
            play(...)
    for frame in live.finish():
        play(...)

Idle motion is the generator's own: the session's timeline is kept up with the caller's clock, and when the audio
has fallen behind the clock by more than `idle_after` (nobody speaks, or the speaker paused), silence fills it up to
the clock (`StreamingSession.idle`). The generator, whose context is the last committed frames, samples those hops
without an audio condition (guidance's unconditional pass): its own motion without speech, the face at rest with
small head motion. Silence's features, fed as audio instead, drive the demo generator far from the portrait
(docs/streaming.md, "Always-on sessions"). Speech that arrives later lands right after the last frame shown (idle
silence put in beyond it is taken back), so its first hop is made as soon as its audio and look-ahead are in, from
the idle frames as context (no jump); the return to idle continues from the speech's frames the same way.
`interrupt` is the `StreamingSession`'s (drop the speech not shown, blend to the resting face), after which the
idle motion takes over again.

Every frame carries its audio (the timeline's 640 samples: speech, or the silence that stood in for it), so a caller
can play picture and sound together, and `input_time`, where that audio starts in what the caller pushed (None for
silence), from which a caller measures the lag behind its own audio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..errors import InputError
from .streaming import StreamFrame, StreamingSession, to_float_samples

IDLE_AFTER_SECONDS = 0.2  # audio this late is taken to be silence: one hop, the size of a microphone's pieces


@dataclass(frozen=True)
class LiveFrame(StreamFrame):
    """A `StreamFrame` with the audio it shows.

    audio: (640,) float32 at 16 kHz, the frame's 40 ms of the session's timeline (speech or silence).
    input_time: seconds into the audio the caller pushed where this frame's audio starts; None when the frame shows
        only silence the session put in (idle, or the blend after an interrupt). Speech that starts part way into a
        frame gives that frame an input time up to 40 ms before the speech's first sample.
    """

    audio: np.ndarray = None
    input_time: float | None = None


class LiveSession:
    """Keeps a `StreamingSession` going with idle motion while no speech comes (module docstring).

    Args:
        session: a new `StreamingSession` taking 16 kHz audio (the live schedule, hop=5, is what it is made for; the
            2-second schedule works too, with 2 s of latency).
        idle_after: seconds the audio may lag the clock before silence fills in. Smaller idles sooner after speech
            stops but splits speech whose pieces come later than that (a microphone's pieces come every 20-200 ms).
    """

    def __init__(self, session: StreamingSession, *, idle_after: float = IDLE_AFTER_SECONDS):
        if session.sample_rate != SAMPLE_RATE:
            raise InputError(f"a live session takes {SAMPLE_RATE} Hz audio; resample before pushing")
        if session.frames_done or session.media_seconds or session.finished:
            raise InputError("a live session needs a new StreamingSession")
        if not idle_after >= 0:
            raise InputError(f"idle_after must be >= 0 seconds, got {idle_after!r}")
        self.session, self.idle_after = session, float(idle_after)
        # silence is put in at most this far ahead of the frames shown: what the next two hops need, so a session
        # behind its clock samples the next idle hop while the render workers draw this one. Speech never waits
        # behind it: `push` takes back the idle silence not shown yet (`StreamingSession.drop_idle_ahead`).
        self.max_ahead = (2 * session.hop + session.lookahead_frames) / FPS
        self._audio = np.zeros(0, np.float32)  # the timeline's audio from frame `session.frames_done` on
        self._audio_frame = 0  # the frame whose audio `_audio` starts with
        # where the caller's audio lies on the timeline: [timeline start, its start in the input, timeline end],
        # in samples; runs wholly before the frames shown are dropped, so this stays short
        self._runs: deque[list[int]] = deque()
        self.input_samples = 0  # samples the caller pushed
        self.silence_samples = 0  # samples of silence put in

    @property
    def timeline_samples(self) -> int:
        return self._audio_frame * SAMPLES_PER_FRAME + self._audio.size

    def push(self, audio, arrived_at: float | None = None) -> Iterator[LiveFrame]:
        """Add the caller's next piece of speech (16 kHz int16 or float samples); returns an iterator over the
        frames it completes. It lands where the timeline ends: right after the last speech, or after the last frame
        shown when only idle silence lies beyond it (that silence is taken back; speech already waiting is never
        split by silence). `arrived_at`: as for `StreamingSession.push`."""
        samples = to_float_samples(audio)
        if not samples.size:
            return iter(())
        dropped = self.session.drop_idle_ahead()  # speech starts right after the last frame shown
        if dropped:
            self._audio = self._audio[:self._audio.size - dropped]
            self.silence_samples -= dropped
        position = self.timeline_samples
        if self._runs and self._runs[-1][2] == position:
            self._runs[-1][2] += samples.size
        else:
            self._runs.append([position, self.input_samples, position + samples.size])
        self.input_samples += samples.size
        return self._append(samples, arrived_at)

    def skip_input(self, samples: int) -> None:
        """Count `samples` of the caller's audio that were dropped before reaching the session (speech sent before an
        interrupt and never pushed), so that later input times still count from the caller's first sample."""
        self.input_samples += samples

    def tick(self, now: float) -> Iterator[LiveFrame]:
        """The caller's clock: `now` seconds since the session started. When the timeline lags it by more than
        `idle_after`, silence fills it up to `now` (at most `max_ahead` past the frames shown); returns the frames
        that completes (idle motion), after those an earlier call left for later (`StreamingSession.resume`)."""
        if self.session.finished:
            return iter(())
        until = min(now, self.session.frames_done / FPS + self.max_ahead)
        missing = round(until * SAMPLE_RATE) - self.timeline_samples
        if round(now * SAMPLE_RATE) - self.timeline_samples <= self.idle_after * SAMPLE_RATE or missing <= 0:
            return self._with_audio(self.session.resume())
        self.silence_samples += missing
        self._audio = np.concatenate([self._audio, np.zeros(missing, np.float32)])
        # the silence ends at `until` on the caller's clock, which was `now - until` seconds ago; it can only be put
        # in `idle_after` later (speech might still come), so it is due then: idle hops made as soon as the rule
        # lets them are on time, and only a session behind that catches up (`max_lag`) on idle frames
        frames = self.session.idle(missing, due_at=self.session.clock() - (now - until) + self.idle_after)
        self._check_timeline()
        return self._with_audio(frames)

    def interrupt(self) -> Iterator[LiveFrame]:
        """Drop the speech not shown yet and ease back to the resting face (`StreamingSession.interrupt`)."""
        session = self.session
        shown = session.frames_done
        frames = session.interrupt()
        self._audio = self._audio[:(shown - self._audio_frame) * SAMPLES_PER_FRAME]
        if shown:
            self._audio = np.concatenate([self._audio, np.zeros(session.blend_frames * SAMPLES_PER_FRAME,
                                                                np.float32)])
        cut = shown * SAMPLES_PER_FRAME
        while self._runs and self._runs[-1][0] >= cut:
            self._runs.pop()
        if self._runs:
            self._runs[-1][2] = min(self._runs[-1][2], cut)
        self._check_timeline()
        return self._with_audio(frames)

    def finish(self) -> Iterator[LiveFrame]:
        """No more audio: the remaining frames of the speech pushed (no idle frames after it)."""
        return self._with_audio(self.session.finish())

    def _append(self, samples: np.ndarray, arrived_at: float | None = None) -> Iterator[LiveFrame]:
        self._audio = np.concatenate([self._audio, samples])
        frames = self.session.push(samples, arrived_at=arrived_at)
        self._check_timeline()
        return self._with_audio(frames)

    def _check_timeline(self) -> None:
        # the session's timeline and this copy of its audio must agree, or frames would play the wrong sound
        if round(self.session.media_seconds * SAMPLE_RATE) != self.timeline_samples:
            raise RuntimeError("live session lost track of the timeline")

    def _with_audio(self, frames: Iterator[StreamFrame]) -> Iterator[LiveFrame]:
        for frame in frames:
            offset = (frame.index - self._audio_frame) * SAMPLES_PER_FRAME
            audio = self._audio[offset:offset + SAMPLES_PER_FRAME]
            if audio.size < SAMPLES_PER_FRAME:  # the last frame of a stream that ends mid-frame
                audio = np.concatenate([audio, np.zeros(SAMPLES_PER_FRAME - audio.size, np.float32)])
            self._audio = self._audio[offset + SAMPLES_PER_FRAME:]
            self._audio_frame = frame.index + 1
            yield LiveFrame(frame.index, frame.timestamp, frame.image, frame.rendered, audio=audio,
                            input_time=self._input_time(frame.index))

    def _input_time(self, index: int) -> float | None:
        position = index * SAMPLES_PER_FRAME
        while self._runs and self._runs[0][2] <= position:
            self._runs.popleft()
        if self._runs and self._runs[0][0] < position + SAMPLES_PER_FRAME:  # some of the frame's audio is theirs
            start, input_start, _ = self._runs[0]
            return (input_start + position - start) / SAMPLE_RATE
        return None
