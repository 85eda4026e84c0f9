"""Sharded datasets: a prepared dataset's clips packed into tar files, for corpora too large for one folder of files.

`imtalker prepare --shard-mb N` writes each finished clip folder into `OUT/shards/shard-NNNNNN.tar` (plain,
uncompressed POSIX tar), one member per file of the clip named `<clip id>.<file>` (`clip_00001-3fa2c1.frames.npy`,
`...masks.npy`, ...): the WebDataset layout, so `webdataset` and `tar` read them too. A shard is written under a
hidden name and renamed when complete; its clip folders are deleted only then, so a killed run loses nothing.
`OUT/shards/index.json` lists the complete shards with their clips' `info.json`.

Training streams the shards (`ShardedRendererPairs`): each process and data-loader worker reads its own shards in
turn, so no file is opened twice and nothing is held but the clips in its buffer.

Plain `tarfile` rather than the `webdataset` package: writing needs nothing but the standard library, and the
reader below is the few lines the recipe needs (a clip is one sample; pairs are drawn inside it), with the same
per-index determinism as the folder dataset.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

SHARDS = "shards"
INDEX = "index.json"


def load_index(folder: str | os.PathLike) -> list[dict]:
    """The complete shards of a dataset folder: [{"name": "shard-000000.tar", "clips": {id: info}}]."""
    path = Path(folder) / SHARDS / INDEX
    return json.loads(path.read_text())["shards"] if path.is_file() else []


class ShardPacker:
    """Packs finished clip folders (`OUT/clips/<id>/`) into shards of about `shard_mb` megabytes.

    Args:
        out: the dataset folder.
        shard_mb: target shard size; a shard is closed once it reaches it.
    """

    def __init__(self, out: Path, shard_mb: int):
        self.out, self.limit = out, shard_mb * 1_000_000
        self.folder = out / SHARDS
        self.folder.mkdir(parents=True, exist_ok=True)
        for partial in self.folder.glob(".*.partial"):  # a killed run's open shard: its clip folders still exist
            partial.unlink()
        self.index = load_index(out)
        self.tar: tarfile.TarFile | None = None
        self.pending: dict[str, dict] = {}

    def packed(self) -> set[str]:
        """Ids of the clips in complete shards."""
        return {clip for shard in self.index for clip in shard["clips"]}

    def add(self, clip: str) -> None:
        """Append the clip folder `clips/<clip>` to the open shard (closing it when it is full)."""
        from ..data.dataset import CLIPS

        source = self.out / CLIPS / clip
        if self.tar is None:
            self.name = f"shard-{len(self.index):06d}.tar"
            self.partial = self.folder / f".{self.name}.partial"
            self.tar = tarfile.open(self.partial, "w", format=tarfile.PAX_FORMAT)
        for file in sorted(source.iterdir()):
            self.tar.add(file, arcname=f"{clip}.{file.name}", recursive=False)
        self.pending[clip] = json.loads((source / "info.json").read_text())
        if self.partial.stat().st_size >= self.limit:
            self.close()

    def close(self) -> None:
        """Finish the open shard: rename it into place, record it in the index, then delete its clip folders."""
        from ..data.dataset import CLIPS

        if self.tar is None:
            return
        self.tar.close()
        self.tar = None
        os.replace(self.partial, self.folder / self.name)
        self.index.append({"name": self.name, "clips": self.pending})
        tmp = self.folder / f".{INDEX}.tmp"
        tmp.write_text(json.dumps({"shards": self.index}, indent=1))
        os.replace(tmp, self.folder / INDEX)
        for clip in self.pending:
            shutil.rmtree(self.out / CLIPS / clip)
        self.pending = {}


def read_shard(path: str | os.PathLike, keep=None) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """The clips of one shard in order: (id, {"frames": array, "masks": ..., "tracks": {...}, "info": {...}}).

    Args:
        path: the shard.
        keep: a set of clip ids to read (the others are skipped without decoding), or None for all.
    """
    clip, arrays = None, {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            member_clip, _, name = member.name.partition(".")
            if member_clip != clip:
                if clip is not None and arrays:
                    yield clip, arrays
                clip, arrays = member_clip, {}
            if keep is not None and clip not in keep:
                continue
            data = tar.extractfile(member).read()
            stem, suffix = name.rsplit(".", 1)
            if suffix == "npy":
                arrays[stem] = np.load(io.BytesIO(data))
            elif suffix == "npz":
                with np.load(io.BytesIO(data)) as stored:
                    arrays[stem] = {k: stored[k] for k in stored.files}
            elif suffix == "json":
                arrays[stem] = json.loads(data)
    if clip is not None and arrays:
        yield clip, arrays


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardedRendererPairs(IterableDataset):
    """The renderer's training items streamed from shards: per clip read, `pairs_per_clip` items of a source and a
    driving frame of that clip and a frame of another clip from a buffer of recent ones (as `RendererPairDataset`
    returns them).

    Each of the `world_size * workers` readers takes every n-th shard and cycles through its shards until it has
    yielded its share of `samples_per_epoch`, so every device gets the same number of batches (what DDP needs).
    Item k of reader r is drawn from a generator seeded with (seed, epoch, r, k).

    Args:
        folder: a sharded dataset folder.
        split: "train" or "val".
        image_size: the renderer's resolution.
        samples_per_epoch: items per epoch over all devices.
        seed: base seed.
        with_landmarks: also return the landmarks (as `RendererPairDataset`).
        pairs_per_clip: items drawn from each clip read.
        buffer_clips: recent clips kept for the "other" frames.
    """

    def __init__(self, folder: str | os.PathLike, split: str, image_size: int, samples_per_epoch: int, seed: int = 0,
                 with_landmarks: bool = False, pairs_per_clip: int = 8, buffer_clips: int = 4):
        from ..data.dataset import load_manifest

        self.shards = [Path(folder) / SHARDS / shard["name"] for shard in load_index(folder)]
        self.keep = {c["id"] for c in load_manifest(folder)["clips"] if c["split"] == split}
        if not self.shards or not self.keep:
            from ..errors import InputError

            raise InputError(f"{folder} has no {split} clips in shards")
        self.image_size, self.samples_per_epoch, self.seed = image_size, samples_per_epoch, seed
        self.with_landmarks, self.pairs_per_clip, self.buffer_clips = with_landmarks, pairs_per_clip, buffer_clips
        self.epoch = 0

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from .data import pair_item

        rank, world = _rank_and_world()
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        reader, readers = rank * workers + worker_id, world * workers
        mine = self.shards[reader % len(self.shards)::readers] or self.shards  # fewer shards than readers: share
        share = self.samples_per_epoch // readers
        rng = np.random.default_rng((self.seed, self.epoch, reader))
        self.epoch += 1
        buffer: list[dict[str, np.ndarray]] = []
        count = 0
        while True:
            for shard in [mine[i] for i in rng.permutation(len(mine))]:
                for _, clip in read_shard(shard, self.keep):
                    buffer = (buffer + [clip])[-self.buffer_clips:]
                    for _ in range(self.pairs_per_clip):
                        if count == share:
                            return
                        item_rng = np.random.default_rng((self.seed, self.epoch, reader, count))
                        others = buffer[:-1] or buffer  # the clips before this one (or its own frames)
                        yield pair_item(clip, lambda: others[int(item_rng.integers(len(others)))], item_rng,
                                        self.image_size, self.with_landmarks)
                        count += 1
