"""Prepared portraits kept for reuse: finding the face and encoding the source is the same work every time one
photo is animated, so the UI and the server keep the last few `PreparedSource`s, keyed by the photo's content.

Keys are tuples whose first item is the photo's content id (`content_id`), followed by whatever else changes the
prepared source (crop settings, the renderer). The cache is thread-safe; least recently used entries leave first.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from . import PreparedSource

PortraitKey = tuple[Hashable, ...]


def content_id(data: bytes) -> str:
    """The id of a portrait: the first 32 hex digits of the sha256 of its bytes (the same file, the same id)."""
    return hashlib.sha256(data).hexdigest()[:32]


def file_content_id(path: str | os.PathLike) -> str:
    """`content_id` of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


class PortraitCache:
    """LRU cache of prepared portraits.

    Args:
        capacity: portraits kept (each holds the photo and the renderer's source features: a few MB at 128 px,
            tens of MB at 512 px).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[PortraitKey, PreparedSource] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: PortraitKey) -> PreparedSource | None:
        """The cached source for `key` (now the most recently used), or None."""
        with self._lock:
            source = self._entries.get(key)
            if source is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return source

    def put(self, key: PortraitKey, source: PreparedSource) -> PreparedSource:
        """Keep `source` under `key`, dropping the least recently used entries beyond the capacity."""
        with self._lock:
            self._entries[key] = source
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return source

    def photo(self, digest: str) -> np.ndarray | None:
        """The photo of any cached entry with this content id (to prepare it again with other settings)."""
        with self._lock:
            for key, source in self._entries.items():
                if key[0] == digest:
                    return source.photo
        return None

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._entries), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}
