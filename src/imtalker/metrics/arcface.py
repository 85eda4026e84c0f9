"""CSIM: the cosine similarity of ArcFace identity embeddings (Deng et al. 2019) of two faces.

The embedding network is insightface's `iresnet` (arcface_torch layout and names, so its published `backbone.pth`
files load unchanged; depth from the file: 18, 34, 50 or 100 layers). An `.onnx` export of any ArcFace model runs
instead through onnxruntime when that is installed. Faces are resized to 112 x 112 and mapped to [-1, 1]; the
frames here are face crops already (`imtalker prepare`, the pipelines' output), so no further alignment is done.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .files import find_metric_file, load_strict, read_state_dict

INPUT_SIZE = 112
EMBEDDING = 512
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, conv, BN, PReLU, conv (stride), BN, plus the (downsampled) input."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, eps=1e-5)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """(B, 3, 112, 112) faces in [0, 1] -> (B, 512) identity embeddings (not normalised)."""

    def __init__(self, layers: tuple[int, int, int, int] = DEPTHS[100]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_planes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stages = [IBasicBlock(in_planes, planes, 2)] + [IBasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stages))
            in_planes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, EMBEDDING)
        self.features = nn.BatchNorm1d(EMBEDDING, eps=1e-5)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = 2 * faces - 1
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.bn2(x).flatten(1)))


class OnnxFaceEmbedder:
    """An ArcFace `.onnx` (input (B, 3, 112, 112) in [-1, 1], RGB, output (B, D)) run by onnxruntime on the CPU."""

    def __init__(self, path: str | os.PathLike):
        try:
            import onnxruntime
        except ImportError:
            raise InputError(f"{path} is an ONNX model, which needs onnxruntime (pip install onnxruntime)") from None
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        x = (2 * faces - 1).detach().cpu().numpy().astype(np.float32)
        return torch.from_numpy(self.session.run(None, {self.input: x})[0])

    def eval(self) -> "OnnxFaceEmbedder":
        return self


def face_embeddings(model, frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) face crops in [0, 1] -> (B, D) unit-length identity embeddings."""
    faces = F.interpolate(frames, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                          antialias=frames.shape[-1] > INPUT_SIZE)
    return F.normalize(model(faces).float(), dim=1)


def csim(model, fake: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """CSIM: cosine similarity of each generated face (B, 3, H, W) with the source face (1 or B, 3, H, W), (B,)."""
    return (face_embeddings(model, fake) * face_embeddings(model, source)).sum(1)


def load_arcface(path: str | os.PathLike | None = None, folder: str | os.PathLike | None = None):
    """insightface's iresnet (`.pth`/`.safetensors`, depth read from the file) or any ArcFace `.onnx`, from `path`
    or from `folder` under its published name (`files.METRIC_FILES`)."""
    path = find_metric_file("arcface", path, folder, suffixes=(".safetensors", ".onnx"))
    if Path(path).suffix == ".onnx":
        return OnnxFaceEmbedder(path)
    state = read_state_dict(path)
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    return load_strict(IResNet(blocks), state, path)
