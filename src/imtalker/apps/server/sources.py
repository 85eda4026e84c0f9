"""Encoded portraits, cached by content hash: a portrait used again (another job, a stream, an uploaded id) is
neither searched for a face nor encoded again.

The cache holds `PreparedSource`s (photo, crop box, renderer cache) keyed by (sha256 of the image bytes, crop,
face_index), least recently used first out. Face detection runs under a lock because one mediapipe detector
serves one thread at a time; encoding runs outside it, on the caller's thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ...pipelines import AudioDrivenPipeline, PreparedSource, SourceCrop
from ...pipelines.portraits import PortraitCache, content_id
from .errors import ApiError
from .inputs import GenerationOptions, decode_portrait

SourceKey = tuple[str, bool, "int | None"]


class SourceCache(PortraitCache):
    """The server's portrait cache: keys (content id, crop, face_index), one pipeline's detector and renderer.

    Face detection runs under a lock because one mediapipe detector serves one thread at a time; encoding runs
    outside it, on the caller's thread.
    """

    def __init__(self, pipeline: AudioDrivenPipeline, capacity: int):
        super().__init__(capacity)
        self.pipeline = pipeline
        self._detector_lock = threading.Lock()

    def locate(self, photo: np.ndarray, crop: bool, face_index: int | None) -> SourceCrop:
        """Find the face and the square to animate (raises NoFaceError); cheap next to encoding."""
        with self._detector_lock:
            return self.pipeline.crop_source(photo, crop=crop, face_index=face_index)

    def encode(self, key: SourceKey, crop: SourceCrop) -> PreparedSource:
        """Encode a located portrait (or return the cached one) and keep it."""
        cached = self.get(key)
        if cached is not None:
            return cached
        return self.put(key, self.pipeline.encode_crop(crop))


@dataclass
class Portrait:
    """A portrait checked at request time: already encoded (`source`) or located and waiting to be (`crop`).

    Holding the encoded source here keeps it alive for the job even if the cache drops it meanwhile.
    """

    key: SourceKey
    source: PreparedSource | None = None
    crop: SourceCrop | None = None

    def prepare(self, cache: SourceCache) -> PreparedSource:
        """The encoded portrait; encodes it (once, then cached) when the request found it new. Worker threads."""
        if self.source is None:
            self.source = cache.encode(self.key, self.crop)
            self.crop = None
        return self.source

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the photo."""
        photo = self.source.photo if self.source is not None else self.crop.photo
        return photo.shape[1], photo.shape[0]


def resolve_portrait(cache: SourceCache, options: GenerationOptions, max_pixels: int, data: bytes | None = None,
                     portrait_id: str | None = None) -> Portrait:
    """Check a portrait given as bytes or as the id of an earlier upload, finding its face unless cached.

    Runs the face detector (tens of ms) but not the encoder, so it may run on a request thread; raises InputError
    (bad image, NoFaceError), ApiError 400 (neither or both given) or 404 (unknown id).
    """
    if data is not None and portrait_id is not None:  # which one was meant? refused rather than guessed
        raise ApiError(400, "bad_request", "give a portrait (an image file) or a portrait_id, not both")
    if data is not None:
        digest = content_id(data)
    elif portrait_id is not None:
        digest = portrait_id
    else:
        raise ApiError(400, "bad_request", "give a portrait (an image file) or the portrait_id of an uploaded one")
    key = (digest, options.crop, options.face_index)
    cached = cache.get(key)
    if cached is not None:
        return Portrait(key, source=cached)
    photo = decode_portrait(data, max_pixels) if data is not None else cache.photo(digest)
    if photo is None:
        raise ApiError(404, "not_found", f"no portrait with id {portrait_id!r} (ids are kept for the last "
                                         f"{cache.capacity} portraits; upload it again)")
    return Portrait(key, crop=cache.locate(photo, options.crop, options.face_index))
