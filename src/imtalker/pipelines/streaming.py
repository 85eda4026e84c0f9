"""Incremental audio-driven generation: audio pushed in pieces of any size, frames yielded as soon as they exist.

    session = StreamingSession(pipe, pipe.prepare_source("face.jpg"), sample_rate=48000, seed=0, hop=5)
    for piece in microphone:                      # bytes of 16-bit PCM, or float / int16 arrays, any length
        for frame in session.push(piece):
            show(frame.index, frame.timestamp, frame.image)
        if user_spoke:
            for frame in session.interrupt():     # drop what was not shown yet, ease back to the source's face
                show(...)
    for frame in session.finish():                # the tail: ceil(duration * 25) frames in all
        show(...)

Data flow per step of `hop` frames (the 2-second chunk schedule by default: hop = clip_frames = 50), as in
`AudioDrivenPipeline` but without the future:

    PCM -> float -> [StreamResampler to 16 kHz] -> StreamingFeatures (running normalisation)
        -> features of the hop and `lookahead_frames` after it, encoded from a window with `context_frames` of past
           audio -> HopSampler.step (context: the frames committed before) -> render_frames -> frames

Why windows: neither audio front end is causal (wav2vec2 attends over its whole input; the log-mel encoder's convs,
per-utterance normalisation and time interpolation look both ways), so features near a window's edge differ from
whole-file features. Past context makes the window's start look like the middle of a file; a little look-ahead
does the same for its end at the price of latency. docs/streaming.md gives the measured differences and costs.

Latency floor: a hop's first frame can be made only once the audio up to the hop's end (plus the look-ahead) has
arrived: frame k is ready (hop - k % hop + lookahead_frames) / 25 s after its own audio, plus compute time. With
the 2-second schedule that is up to 2.2 s; with hops of 5 and a look-ahead of 2, up to 0.28 s. The generator was
trained on 2-second clips, so a hop is sampled as the start of a whole clip whose unheard rest is padded
(`imtalker.sampling.HopSchedule`; docs/streaming.md measures how close that stays to the offline motion).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass

import numpy as np
import torch

from ..io.audio import StreamResampler
from ..io.media import check_rate
from ..constants import DEFAULT_CFG_SCALE, DEFAULT_NFE, FPS, LIVE_LOOKAHEAD_FRAMES, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..errors import InputError
from ..features import StreamingFeatures
from ..sampling import HopSampler, HopSchedule, SamplingOptions
from . import AudioDrivenPipeline, PreparedSource
from .render_pool import default_render_workers

DEFAULT_CONTEXT_FRAMES = 50  # 2 s of past audio before each window
DEFAULT_LOOKAHEAD_FRAMES = 5  # 0.2 s of audio after a 2-second chunk (latency it costs: 0.2 s)
MAX_CATCH_UP_STEP = 25  # a session catching up draws at least one picture a second
INTERRUPT_BLEND_FRAMES = 6  # an interrupted face eases back to the source's over 240 ms
INPUT_POLL_SECONDS = 0.005  # while waiting for a render, how often a session asks whether input waits
SAMPLE_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # what bytes pushed to a session hold


@dataclass(frozen=True)
class StreamFrame:
    """One frame: its index, its media time (index / 25 s) and the picture."""

    index: int
    timestamp: float  # media time: seconds from the first audio sample; this frame's audio starts here
    image: np.ndarray  # (H, W, 3) uint8
    rendered: bool = True  # False: a session catching up (`max_lag`) shows the previous picture again


@dataclass
class RenderingPart:
    """Committed latents (n, motion_dim) being rendered: the future of the pictures of those drawn, which of them
    each frame shows (-1: the picture shown before, while catching up), and how many frames were shown."""

    latents: torch.Tensor
    frames: Future
    pictures: list[int]
    shown: int = 0


class PcmDecoder:
    """Bytes of interleaved-free mono PCM in pieces of any size (a sample may be split across pieces) -> float32.

    Args:
        sample_format: "s16le" (16-bit signed little-endian) or "f32le" (32-bit float little-endian).
    """

    def __init__(self, sample_format: str = "s16le"):
        if sample_format not in SAMPLE_FORMATS:
            raise InputError(f"sample format must be one of {', '.join(SAMPLE_FORMATS)}, got {sample_format!r}")
        self.dtype = SAMPLE_FORMATS[sample_format]
        self._partial = b""  # the first bytes of a sample whose rest is in the next piece

    def decode(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        data = self._partial + bytes(data)
        whole = len(data) - len(data) % self.dtype.itemsize
        self._partial = data[whole:]
        samples = np.frombuffer(data[:whole], dtype=self.dtype)
        return to_float_samples(samples)

    @property
    def pending_bytes(self) -> int:
        return len(self._partial)


def to_float_samples(samples: np.ndarray) -> np.ndarray:
    """(n,) int16 PCM or float samples -> float32 in [-1, 1]; refuses NaN, infinity and unscaled PCM in floats."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise InputError(f"audio pieces must be 1-D (mono samples), got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if not np.issubdtype(samples.dtype, np.floating):
        raise InputError(f"audio pieces must be int16 PCM or float samples, got {samples.dtype}")
    samples = samples.astype(np.float32)
    if samples.size and not np.isfinite(samples).all():
        raise InputError("audio holds NaN or infinite samples")
    if samples.size and np.abs(samples).max() > 2.0:  # the limit load_audio uses for in-memory waveforms
        raise InputError("float audio must be in [-1, 1]; this looks like unscaled PCM (divide int16 by 32768)")
    return np.clip(samples, -1.0, 1.0)


def head_motion_descriptions(**descriptions: str | None) -> dict:
    """Parsed pose / gaze / cam descriptions of a live session (None ones left out); ramps are refused there.

    Raises:
        InputError: a bad description, or one with a ramp (A..B), which needs a known length.
    """
    from ..preprocess.conditions import parse_description

    parsed = {name: parse_description(text, name) for name, text in descriptions.items() if text is not None}
    for name, motion in parsed.items():
        if motion.needs_length:
            raise InputError(f"{name} {motion.text!r}: a ramp (A..B) needs a known length, which a live session "
                             "does not have; use a constant, nod or shake")
    return parsed


class StreamingSession:
    """Makes a talking video from audio that arrives over time; frames come out a hop (or a 2 s chunk) at a time.

    Args:
        pipeline: the audio-driven pipeline whose networks run (the session never changes it; several sessions
            may share one pipeline from different threads).
        source: the portrait from `pipeline.prepare_source`.
        sample_rate: rate of the audio that will be pushed, in Hz (resampled to 16 kHz incrementally).
        sample_format: how bytes pushed are read: "s16le" or "f32le" (arrays carry their own type).
        cfg_scale, nfe, seed: as for `AudioDrivenPipeline.to_file`; the same seed draws the same noise. Live use
            may take fewer Euler points (the paper: 5 steps sync lips as well as 10).
        paste_back: render into the full photo instead of the face crop.
        batch_size: frames rendered at once (by each render worker).
        render_workers: threads rendering the frames, from the pipeline's shared `RenderPool`; None: two on a CPU
            with two cores or more, else one. While they render a hop, the session samples the next one.
        hop: frames committed per step (`imtalker.sampling.HopSchedule`): None (default) is the 2-second chunk
            schedule of the offline pipeline; 5 (200 ms) is the live schedule.
        lookahead_frames: audio after each hop that must have arrived before it is made, encoded with it (and
            seen by the generator); delays every frame by this many frames. Default: 5 for the 2-second schedule,
            2 with hops.
        padding: how the generator's clip is filled past the heard audio (`HopSchedule`); None: the schedule's
            default.
        context_frames: past audio (frames of 40 ms) encoded with each window; more is closer to whole-file
            features and costs encoder time.
        blend_frames: frames over which `interrupt` eases back to the source's face.
        max_seconds: refuse audio beyond this length (None: no limit).
        max_lag: catch up when the session falls behind its audio: a hop committed more than this many seconds
            after the audio it waited for (its hop and look-ahead) was pushed renders only every k-th frame
            (k = 1 + that delay // max_lag, at most 25) and the others repeat the picture before
            (`StreamFrame.rendered` is False), so a renderer slower than real time shows fewer distinct pictures
            instead of drifting ever later. A session that keeps up commits each hop as its audio comes and
            renders every frame, given pieces of up to a hop (a microphone's 20 ms, the page's and benchmark's
            200 ms): of a longer piece, the later hops wait for the earlier ones' render and count as late. None
            (default): every frame is rendered whatever the delay (offline-equal output).
        clock: seconds, monotonic; when audio was pushed and when hops are committed (tests pass their own).
        input_waiting: the caller's check for audio waiting for this session, or None. While it answers True and
            the session lacks audio for its next hop, iterating the frames of a push stops instead of waiting for a
            render (asked every 5 ms while waiting), so that the caller pushes what came first: the next hop is then
            sampled while the render workers draw this one, instead of after its last frame (the frames not yielded
            come first from the next call). A session holding its next hop's audio waits as before, so audio sent
            faster than real time waits outside, where the caller bounds it.
        interrupt_waiting: the caller's check for an interrupt waiting, or None: while it answers True, iterating
            stops at once instead of waiting for a render, so the caller can `interrupt` within 5 ms.
        pose, gaze, cam: head motion for the whole session, as descriptions ("yaw=15deg", "nod", "look-at-camera";
            `imtalker.preprocess.conditions`) without ramps, since a live session has no known length; None leaves
            the condition out (the generator's own motion).

    Media time: frame i's timestamp is i / 25 s on the session's timeline, which is the audio pushed, except that
    `interrupt` replaces the dropped audio by `blend_frames` frames of silence (`media_seconds` says where the next
    audio lands). Without interrupts the total is ceil(duration * 25) frames, like the offline pipeline's.
    """

    def __init__(self, pipeline: AudioDrivenPipeline, source: PreparedSource, *, sample_rate: int = SAMPLE_RATE,
                 sample_format: str = "s16le", cfg_scale: float = DEFAULT_CFG_SCALE, nfe: int = DEFAULT_NFE,
                 seed: int | None = None, paste_back: bool = False, batch_size: int = 8, hop: int | None = None,
                 lookahead_frames: int | None = None, padding: str | None = None,
                 context_frames: int = DEFAULT_CONTEXT_FRAMES, blend_frames: int = INTERRUPT_BLEND_FRAMES,
                 max_seconds: float | None = None, render_workers: int | None = None, max_lag: float | None = None,
                 pose: str | None = None, gaze: str | None = None, cam: str | None = None,
                 clock: Callable[[], float] = time.monotonic, input_waiting: Callable[[], bool] | None = None,
                 interrupt_waiting: Callable[[], bool] | None = None):
        if render_workers is None:
            render_workers = default_render_workers(pipeline.device)
        for name, value, low in (("batch_size", batch_size, 1), ("context_frames", context_frames, 0),
                                 ("blend_frames", blend_frames, 1), ("render_workers", render_workers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("max_seconds", max_seconds), ("max_lag", max_lag)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise InputError(f"{name} must be a positive number of seconds or None, got {value!r}")
        self.head_motion = head_motion_descriptions(pose=pose, gaze=gaze, cam=cam)
        self.clip_frames = pipeline.generator.config.clip_frames
        self.schedule = live_schedule(hop, lookahead_frames, padding, self.clip_frames)
        sampling = SamplingOptions(cfg_scale, nfe, seed)
        self.pipeline, self.source = pipeline, source
        self.sample_rate = check_rate(sample_rate, "sample_rate")
        self.paste_back, self.batch_size = paste_back, batch_size
        self.hop, self.lookahead_frames = self.schedule.hop, self.schedule.lookahead
        self.context_frames, self.blend_frames = context_frames, blend_frames
        self.max_seconds, self.max_lag = max_seconds, max_lag
        self.clock, self.input_waiting, self.interrupt_waiting = clock, input_waiting, interrupt_waiting
        # (timeline samples, clock time, paced): when the timeline reached that length (a push, idle silence, a
        # blend); paced records are silence played in real time, whose earlier samples were due earlier
        self._arrivals: deque[tuple[int, float, bool]] = deque()
        self._decoder = PcmDecoder(sample_format)
        self._resampler = self._new_resampler()
        self._features = StreamingFeatures(pipeline.audio_encoder, context_frames, pipeline.device)
        self._sampler = HopSampler(pipeline.generator, source.state.motion, sampling, self.schedule.padding)
        self._render_pool = pipeline.render_pool(render_workers)
        self._input_samples = 0  # samples pushed in all, at sample_rate (for the limit)
        self._segment_input = 0  # ... since the last interrupt, and where on the timeline that segment starts
        self._segment_start = 0
        self._next_frame = 0  # first frame not committed yet
        self._rendering: deque[RenderingPart] = deque()  # committed frames not shown yet, in order
        self._last_shown = source.state.motion[0].float()  # latent of the last picture shown
        self._last_picture: np.ndarray | None = None  # ... and the picture
        self._frames_undrawn = 0  # committed frames since the last one drawn (catching up draws every k-th)
        self._quiet: list[list[int]] = []  # [start, end) samples of the timeline where nobody speaks (`idle`)
        self.frames_done = 0  # frames shown (yielded)
        self.finished = False

    # -- input --------------------------------------------------------------------------------------------------

    @property
    def seconds_received(self) -> float:
        """Length of the audio pushed so far (dropped speech included), in seconds."""
        return self._input_samples / self.sample_rate

    @property
    def media_seconds(self) -> float:
        """Where on the media timeline the next audio pushed lands, in seconds (frame i is at i / 25 s)."""
        return self._features.received / SAMPLE_RATE

    @property
    def buffered_samples(self) -> int:
        """16 kHz samples held for later windows (bounded by one window, whatever the stream's length)."""
        return self._features.audio.size

    def push(self, audio, arrived_at: float | None = None) -> Iterator[StreamFrame]:
        """Add the next piece of audio; returns an iterator over every frame it completes.

        The audio is taken at once; the frames are rendered as the iterator is consumed (an iterator left unread,
        or read in part, loses nothing: the frames it did not yield come first from the next call).

        Args:
            audio: bytes in `sample_format`, or a 1-D int16 / float array; any length, including empty.
            arrived_at: when the audio came, on `clock` (None: now). A worker that takes audio which waited in a
                queue passes when its first piece came, so the wait counts towards `max_lag`.

        Raises:
            InputError: bad samples, audio past `max_seconds`, or push after `finish`.
        """
        if self.finished:
            raise InputError("the stream is finished; start a new session")
        if isinstance(audio, (bytes, bytearray, memoryview)):
            samples = self._decoder.decode(audio)
        else:
            samples = to_float_samples(audio)
        self._input_samples += samples.size
        self._segment_input += samples.size
        if self.max_seconds is not None and self.seconds_received > self.max_seconds:
            raise InputError(f"the audio is longer than the limit of {self.max_seconds:g} s")
        self._features.append(self._resampler.push(samples) if self._resampler is not None else samples)
        self._arrived(arrived_at)
        return self._advance(final=False)

    def idle(self, samples: int, due_at: float | None = None) -> Iterator[StreamFrame]:
        """Nobody speaks for the next `samples` (at 16 kHz): the timeline grows by that much silence, and hops with
        only such silence in their window are sampled without an audio condition (`HopSampler.step(silent=True)`:
        the generator's own motion without speech, the face at rest). Returns an iterator over the frames that
        completes. `imtalker.pipelines.live.LiveSession` calls it whenever the speech falls behind the clock.
        `due_at`: when the end of this silence is due on `clock` (None: now); the silence before it was due as
        much earlier as it comes before, so hops of silence a session shows late catch up like speech.

        Raises:
            InputError: idle after `finish`, or while resampled audio is pushed (its filter would smear the seam).
        """
        if self.finished:
            raise InputError("the stream is finished; start a new session")
        if self._resampler is not None:
            raise InputError(f"idle needs a session taking {SAMPLE_RATE} Hz audio")
        start = self._features.received
        if self._quiet and self._quiet[-1][1] == start:
            self._quiet[-1][1] += samples
        else:
            self._quiet.append([start, start + samples])
        self._features.append(np.zeros(samples, np.float32))
        self._arrived(due_at, paced=True)
        return self._advance(final=False)

    def finish(self) -> Iterator[StreamFrame]:
        """No more audio: an iterator over the remaining frames (ceil(duration * 25) in all without interrupts)."""
        if self.finished:
            return iter(())
        self.finished = True
        features = self._features
        if self._resampler is not None:
            features.append(self._resampler.flush())
            # fix the length to the exact ratio, as load_audio does, so the frame count never depends on rounding
            length = self._segment_start + round(self._segment_input * SAMPLE_RATE / self.sample_rate)
            if features.received > length:
                features.truncate(length)
            elif features.received < length:
                features.append(np.zeros(length - features.received, np.float32))
        self._truncate_arrivals(features.received)
        self._arrived()
        return self._advance(final=True)

    def interrupt(self) -> Iterator[StreamFrame]:
        """Stop talking now: drop the speech whose frames were not shown yet and ease back to the source's face.

        The frames already yielded stay; every later one of the speech pushed so far is dropped (with its audio,
        so it is never spoken by the face), and `blend_frames` frames ease from the last frame shown to the
        source's own motion latent (smoothstep, no jump). On the media timeline those frames take the place of
        silence; audio pushed afterwards lands at `media_seconds`, after them. Returns an iterator over the blend
        frames (nothing when no frame was shown yet).

        Raises:
            InputError: interrupt after `finish`.
        """
        if self.finished:
            raise InputError("the stream is finished; start a new session")
        shown = self.frames_done
        self._drop_after(shown)
        self._resampler = self._new_resampler()  # its filter holds the start of the dropped speech
        # (the PCM decoder keeps a split sample: the bytes that follow are its rest, whatever was dropped)
        if shown:
            steps = torch.arange(1, self.blend_frames + 1, dtype=torch.float32) / self.blend_frames
            weights = (steps * steps * (3 - 2 * steps))[:, None]  # smoothstep: eases out and in
            target = self.source.state.motion[0].float().cpu()
            start = self._last_shown.cpu()
            blend = start + (target - start) * weights  # (blend_frames, motion_dim)
            stop = shown + self.blend_frames
            self._features.append(np.zeros(self.blend_frames * SAMPLES_PER_FRAME, np.float32))
            self._arrived()
            self._sampler.append(blend[None], self._features.encode(shown, stop, stop),
                                 **self._head_conditions(shown, self.blend_frames))
            # one frame a part: the first blend frame comes one frame's render after a worker is free, not three
            self._render(blend, late=0.0, part_frames=1)
            self._next_frame = stop
        self._segment_start, self._segment_input = self._features.received, 0
        return self._advance(final=False)

    def resume(self) -> Iterator[StreamFrame]:
        """An iterator over the frames that iterating left for later (it stops when `input_waiting` or
        `interrupt_waiting` answers True) and any hop whose audio is now complete. A caller that found nothing to
        push after all (the audio waiting was dropped, say) calls it, or those frames wait for the next push."""
        if self.finished:
            return iter(())
        return self._advance(final=False)

    def drop_idle_ahead(self) -> int:
        """Take back the `idle` silence on the timeline past the frames shown (sampled, being rendered or not yet
        either), so that audio pushed next starts right after the last frame shown instead of behind it. Returns
        the samples dropped: 0 when nothing, or anything but idle silence, lies past the frames shown."""
        shown, end = self.frames_done * SAMPLES_PER_FRAME, self._features.received
        if end <= shown or not self._is_quiet(shown, end):
            return 0
        self._drop_after(self.frames_done)
        return end - shown

    def _drop_after(self, frame: int) -> None:
        """Take back the timeline past `frame`: the hops sampled or being rendered, the audio, and when it came."""
        cut = frame * SAMPLES_PER_FRAME
        self._sampler.forget(self._next_frame - frame)
        for part in self._rendering:
            part.frames.cancel()
        self._rendering.clear()
        self._features.truncate(cut)
        self._truncate_arrivals(cut)
        self._quiet = [[start, min(stop, cut)] for start, stop in self._quiet if start < cut]
        self._next_frame = frame

    def _new_resampler(self) -> StreamResampler | None:
        return StreamResampler(self.sample_rate) if self.sample_rate != SAMPLE_RATE else None

    # -- hops ---------------------------------------------------------------------------------------------------

    def _advance(self, final: bool) -> Iterator[StreamFrame]:
        """Show the frames committed and not shown, then commit and show every hop whose audio (and look-ahead) is
        complete; at the end, all that is left. The next hop, when its audio is in, is sampled while the render
        workers draw this one."""
        while True:
            if not self._rendering:
                if not self._commit_next_hop(final):
                    return
                continue
            if sum(len(part.latents) for part in self._rendering) <= self.hop:
                self._commit_next_hop(final)
            part = self._rendering[0]
            if not final and (self.input_waiting or self.interrupt_waiting):
                while not part.frames.done():  # the frames not yielded come from the next call
                    if self._caller_has_input():
                        return
                    wait([part.frames], timeout=INPUT_POLL_SECONDS)
            images = part.frames.result()
            while part.shown < len(part.latents):
                picture = part.pictures[part.shown]
                if picture >= 0:
                    self._last_shown, self._last_picture = part.latents[part.shown].float(), images[picture]
                part.shown += 1
                index = self.frames_done
                self.frames_done += 1
                yield StreamFrame(index, index / FPS, self._last_picture, picture >= 0)
                if not self._rendering or self._rendering[0] is not part:  # an interrupt dropped it meanwhile
                    break
            else:
                self._rendering.popleft()

    def _caller_has_input(self) -> bool:
        """An interrupt waits, or audio does while the next hop's is not all in (`input_waiting`)."""
        if self.interrupt_waiting is not None and self.interrupt_waiting():
            return True
        next_hop = (self._next_frame + self.hop + self.lookahead_frames) * SAMPLES_PER_FRAME
        return self.input_waiting is not None and self._features.received < next_hop and self.input_waiting()

    def _arrived(self, at: float | None = None, paced: bool = False) -> None:
        if not self._arrivals or self._arrivals[-1][0] < self._features.received:  # an empty push adds nothing
            self._arrivals.append((self._features.received, self.clock() if at is None else at, paced))

    def _truncate_arrivals(self, length: int) -> None:
        """The timeline was cut back to `length` samples: forget when the cut part arrived."""
        while self._arrivals and self._arrivals[-1][0] > length:
            self._arrivals.pop()

    def _lateness(self, needed: int) -> float:
        """Seconds since the timeline's first `needed` samples came (paced silence: since they were due); 0 when
        nothing recorded it."""
        while len(self._arrivals) > 1 and self._arrivals[1][0] < needed:
            self._arrivals.popleft()  # a later record also covers it: this one is past
        for length, at, paced in self._arrivals:
            if length >= needed:
                due = at - (length - needed) / SAMPLE_RATE if paced else at
                return max(0.0, self.clock() - due)
        return 0.0

    def _render(self, latents: torch.Tensor, late: float, part_frames: int | None = None) -> None:
        """Start rendering committed latents (n, motion_dim) on the render workers, `batch_size` each at a time
        (`part_frames`: in parts of that many instead);
        when they are committed `late` seconds after their audio came, more than `max_lag`, only every k-th frame
        (across hops): k = 1 + late // max_lag, at most `MAX_CATCH_UP_STEP` (catching up)."""
        step = 1
        if self.max_lag is not None and late > self.max_lag:  # the further behind, the fewer pictures
            step = min(1 + int(late / self.max_lag), MAX_CATCH_UP_STEP)
        pictures, drawn = [], []
        for k in range(len(latents)):
            first_of_session = self._last_picture is None and not self._rendering and not drawn
            if first_of_session or self._frames_undrawn + 1 >= step:
                pictures.append(len(drawn))
                drawn.append(k)
                self._frames_undrawn = 0
            else:
                pictures.append(-1)
                self._frames_undrawn += 1
        # with several workers, one part each (a hop of 5: 3 + 2 frames): smaller parts show a hop's first frames
        # sooner but cost more per frame, and on 2 cores that is what falls behind (the demo model's hop: 155 ms in
        # parts of 3, 180-200 ms in parts of 2; docs/streaming.md, "Keeping up"); one worker (a GPU) renders whole
        # batches
        workers = self._render_pool.workers
        part = part_frames or (self.batch_size if workers == 1
                               else min(self.batch_size, math.ceil(len(drawn) / workers)))
        parts = self._render_pool.submit(self.source, latents[drawn], self.paste_back, part) if drawn else []
        start, first = 0, 0  # frames of this hop given to a part; its first drawn one
        for drawn_latents, frames in parts:
            stop = drawn[first + len(drawn_latents)] if first + len(drawn_latents) < len(drawn) else len(latents)
            self._rendering.append(RenderingPart(latents[start:stop], frames,
                                                 [p - first if p >= 0 else -1 for p in pictures[start:stop]]))
            start, first = stop, first + len(drawn_latents)
        if start < len(latents):  # no picture drawn in this hop: it repeats the last one
            done = Future()
            done.set_result([])
            self._rendering.append(RenderingPart(latents[start:], done, pictures[start:]))

    def _commit_next_hop(self, final: bool) -> bool:
        """Sample the next hop and start rendering it if its audio is in (at the end: what is left); False if not."""
        features, hop, lookahead = self._features, self.schedule.hop, self.schedule.lookahead
        total = math.ceil(features.received * FPS / SAMPLE_RATE)
        start = self._next_frame
        if final:
            if start >= total:
                return False
            stop = min(start + hop, total)
            hi = min(total, stop + lookahead)
        else:
            stop = start + hop
            hi = stop + lookahead
            if features.received < hi * SAMPLES_PER_FRAME:
                return False
        silent = self._is_quiet(start * SAMPLES_PER_FRAME, min(hi * SAMPLES_PER_FRAME, features.received))
        with self._render_pool.beside_workers():  # the workers may be drawing the hop before on every core
            # the generator's clip holds the hop and as much of the look-ahead as fits
            heard = features.encode(start, min(hi, start + self.clip_frames), hi,
                                    until=features.received if final else None)
            motion = self._sampler.step(heard, stop - start, silent=silent,
                                        **self._head_conditions(start, heard.shape[1]))[0]  # (stop - start, d)
        self._render(motion, late=self._lateness(min(hi * SAMPLES_PER_FRAME, features.received)))
        self._next_frame = stop
        features.forget_before(stop)
        self._quiet = [span for span in self._quiet if span[1] > stop * SAMPLES_PER_FRAME]
        return True

    def _head_conditions(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """The session's pose / gaze / cam for frames [start, start + count) of the timeline, (1, count, d) each."""
        frames = np.arange(start, start + count)
        return {name: torch.from_numpy(motion.at(frames))[None] for name, motion in self.head_motion.items()}

    def _is_quiet(self, start: int, stop: int) -> bool:
        """Whether samples [start, stop) of the timeline all lie in one stretch of `idle` silence."""
        return any(begin <= start and stop <= end for begin, end in self._quiet)


def live_schedule(hop: int | None, lookahead_frames: int | None, padding: str | None,
                  clip_frames: int) -> HopSchedule:
    """The `HopSchedule` a session runs: the 2-second chunk schedule (hop None), or hops of `hop` frames.

    With the default padding ("repeat", as the offline sampler pads a short last chunk) the 2-second schedule's
    motion is the offline pipeline's.
    """
    options = {} if padding is None else {"padding": padding}
    if hop is None:
        lookahead = DEFAULT_LOOKAHEAD_FRAMES if lookahead_frames is None else lookahead_frames
        return HopSchedule(clip_frames, lookahead, **options)
    lookahead = LIVE_LOOKAHEAD_FRAMES if lookahead_frames is None else lookahead_frames
    return HopSchedule(hop, lookahead, **options).check_fits(clip_frames)
