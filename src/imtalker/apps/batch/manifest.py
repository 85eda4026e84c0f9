"""The job manifest of `imtalker batch`: one video per line, as JSON Lines (`.jsonl`) or CSV with a header row.

Fields of a job (CSV columns; an empty cell is "not given"):

    portrait     the photo to animate (required)
    audio        speech: an audio-driven job, or
    driving      a driving video: a video-driven job (exactly one of audio and driving)
    output       the video's path inside the output folder (default: <portrait stem>-<audio or driving stem>.mp4)
    seed, cfg_scale, nfe, pose, gaze, cam, tracks_from       audio-driven options, as in `imtalker generate`
                                                             (pose/gaze/cam: a file or a description)
    relative, crop_driving                                   video-driven options, as in `imtalker reenact`
    crop, paste_back, face_index, max_seconds                both

Relative paths are read from the manifest's folder. The output name is the job's key in `results.jsonl`, so it must
be unique. A line that cannot be read becomes a job that fails with the reason: bad lines fail alone.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ...errors import InputError

# per-job options and the type each is read as; paths are resolved against the manifest's folder
TRACK = "track"  # a head-motion condition: a track file (a path) or a description such as "yaw=20deg"
AUDIO_OPTIONS = {"seed": int, "cfg_scale": float, "nfe": int, "pose": TRACK, "gaze": TRACK, "cam": TRACK,
                 "tracks_from": Path}
VIDEO_OPTIONS = {"relative": bool, "crop_driving": bool}
COMMON_OPTIONS = {"crop": bool, "paste_back": bool, "face_index": int, "max_seconds": float}
INPUTS = ("portrait", "audio", "driving", "output")
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")


@dataclass(frozen=True)
class BatchJob:
    """One video to make. `problem` is set (and the job fails with it) when its line cannot be used."""

    name: str  # output path inside the output folder, POSIX form; the job's key in results.jsonl
    line: int  # 1-based line of the manifest (CSV: counting the header)
    portrait: str | None = None
    audio: str | None = None
    driving: str | None = None
    options: dict = field(default_factory=dict)  # checked per-job options, paths as strings
    problem: str | None = None

    @property
    def kind(self) -> str:
        return "video" if self.driving is not None else "audio"

    def fingerprint(self) -> str:
        """A hash of what the job asks for: a finished job whose line changed is made again."""
        spec = json.dumps([self.portrait, self.audio, self.driving, self.options], sort_keys=True, default=str)
        return hashlib.sha256(spec.encode()).hexdigest()[:16]


def read_manifest(path: str | os.PathLike) -> list[BatchJob]:
    """The jobs of a manifest, in order.

    Raises:
        InputError: the file is missing or unreadable, is neither .jsonl/.json nor .csv, or holds no job.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"manifest {path} cannot be read: {err}") from None
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _jsonl_rows(text)
    elif suffix == ".csv":
        rows = _csv_rows(text)
    else:
        raise InputError(f"manifest {path} must be .jsonl or .csv, got '{path.suffix}'")
    jobs = [_job(line, row, path.parent.resolve()) for line, row in rows]
    if not jobs:
        raise InputError(f"manifest {path} holds no job")
    return _mark_duplicates(jobs)


def _jsonl_rows(text: str) -> list[tuple[int, dict | str]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as err:
            row = f"not JSON: {err}"
        rows.append((line, row if isinstance(row, (dict, str)) else f"not a JSON object: {raw.strip()[:60]}"))
    return rows


def _csv_rows(text: str) -> list[tuple[int, dict | str]]:
    reader = csv.DictReader(text.splitlines())
    rows = []
    for row in reader:
        extra = row.pop(None, None)  # cells beyond the header
        cleaned = {key.strip(): value.strip() for key, value in row.items() if key and value and value.strip()}
        rows.append((reader.line_num, f"{len(extra)} cells more than the header has" if extra else cleaned))
    return rows


def _job(line: int, row: dict | str, base: Path) -> BatchJob:
    """A job from one parsed row; what is wrong with it becomes its `problem`, never an exception."""
    fallback = f"line-{line:05d}.mp4"  # a name for a line too broken to name its output
    name = fallback
    if isinstance(row, str):
        return BatchJob(fallback, line, problem=f"line {line}: {row}")
    try:
        name = _output_name(row)
        portrait, audio, driving = (_path(row.get(key), base) for key in ("portrait", "audio", "driving"))
        if portrait is None:
            raise InputError("no portrait")
        if (audio is None) == (driving is None):
            raise InputError("give exactly one of audio (audio-driven) and driving (video-driven)")
        allowed = {**COMMON_OPTIONS, **(VIDEO_OPTIONS if driving else AUDIO_OPTIONS)}
        unknown = sorted(set(row) - set(allowed) - set(INPUTS))
        if unknown:
            raise InputError(f"unknown or misplaced field{'s' * (len(unknown) > 1)} {', '.join(unknown)} "
                             f"for a {'video' if driving else 'audio'}-driven job")
        options = {key: _value(key, kind, row[key], base) for key, kind in allowed.items()
                   if row.get(key) is not None}
    except InputError as err:
        return BatchJob(name, line, problem=f"line {line}: {err}")
    return BatchJob(name, line, portrait, audio, driving, options)


def _output_name(row: dict) -> str:
    output = row.get("output")
    if output is None:
        portrait, other = row.get("portrait"), row.get("audio") or row.get("driving")
        if not isinstance(portrait, str) or not isinstance(other, str):
            raise InputError("no output, and no portrait and audio/driving to name it after")
        output = f"{PurePosixPath(portrait).stem}-{PurePosixPath(other).stem}.mp4"
    if not isinstance(output, str) or not output.strip():
        raise InputError(f"output must be a file name, got {output!r}")
    name = PurePosixPath(output.strip().replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts:
        raise InputError(f"output '{output}' must stay inside the output folder (no absolute path, no '..')")
    if not name.suffix:
        name = name.with_suffix(".mp4")
    if name.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output '{output}' must end in {', '.join(OUTPUT_SUFFIXES)}")
    return name.as_posix()


def _path(value, base: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(f"a path must be a string, got {value!r}")
    return str(base / Path(value).expanduser())  # an absolute value replaces the base


def _track(key: str, value, base: Path) -> str | None:
    """A track file's path (resolved like any path) or a checked description (docs/conditions.md)."""
    from ...preprocess.conditions import TRACK_FILE_SUFFIXES, parse_description

    if isinstance(value, str) and Path(value).suffix.lower() not in TRACK_FILE_SUFFIXES:
        return parse_description(value, key).text
    return _path(value, base)


def _value(key: str, kind: type | str, value, base: Path):
    """`value` read as `kind`; CSV gives strings, JSON typed values (an int is a valid float, not a bool)."""
    if kind is Path:
        return _path(value, base)
    if kind == TRACK:
        return _track(key, value, base)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in TRUE | FALSE:
            return value.lower() in TRUE
    elif isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is float or float(value).is_integer():
            return kind(value)
    expected = "true/false" if kind is bool else "a number" if kind is float else "an integer"
    raise InputError(f"{key} must be {expected}, got {value!r}")


def _mark_duplicates(jobs: list[BatchJob]) -> list[BatchJob]:
    """The first job naming an output keeps it; later ones fail under their line's name, since two jobs cannot
    share one output or one line of results."""
    first: dict[str, int] = {}
    marked = []
    for job in jobs:
        if job.name in first:
            reason = job.problem or f"line {job.line}: output '{job.name}' is already named by line {first[job.name]}"
            job = BatchJob(f"line-{job.line:05d}.mp4", job.line, problem=reason)
        first.setdefault(job.name, job.line)
        marked.append(job)
    return marked
