"""Sync-C and Sync-D: audio-visual synchronisation measured by SyncNet (Chung & Zisserman 2016).

The network is the public SyncNet release's `S` model (layout and names of its state dict, so `syncnet_v2.model`
loads unchanged): a lip stream on 5 consecutive 224 px face frames and an audio stream on 20 MFCC steps (0.2 s), each
ending in a 1024-d embedding. The scores follow the release's evaluation: for every 5-frame window, the distance of
its lip embedding to the audio embeddings shifted by -15..15 video frames is taken; averaged over windows, the
smallest mean distance is **Sync-D**, its shift the audio-visual offset, and the median minus the smallest is the
confidence **Sync-C**. Inputs match what the release feeds its network: BGR pixels in 0..255, and MFCCs (13
coefficients, 100 per second, python_speech_features' defaults) of 16 kHz audio at 16-bit integer scale.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import FPS, SAMPLE_RATE
from .files import find_metric_file, load_strict, read_state_dict

WINDOW_FRAMES = 5  # video frames per lip window
MFCC_PER_FRAME = 4  # 100 MFCC steps per second at 25 fps
WINDOW_MFCC = 20  # MFCC steps per audio window
INPUT_SIZE = 224
MAX_SHIFT = 15  # video frames searched either way


def _conv_bn(conv: nn.Module, bn: nn.Module, pool: nn.Module | None = None) -> list[nn.Module]:
    return [conv, bn, nn.ReLU()] + ([pool] if pool is not None else [])


class SyncNet(nn.Module):
    """`embed_lips` (B, 3, 5, 224, 224) BGR 0..255 -> (B, 1024); `embed_audio` (B, 1, 13, 20) MFCCs -> (B, 1024)."""

    def __init__(self, embedding: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn(nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.MaxPool2d(1, 1)),
            *_conv_bn(nn.Conv2d(64, 192, 3, padding=1), nn.BatchNorm2d(192), nn.MaxPool2d(3, (1, 2))),
            *_conv_bn(nn.Conv2d(192, 384, 3, padding=1), nn.BatchNorm2d(384)),
            *_conv_bn(nn.Conv2d(384, 256, 3, padding=1), nn.BatchNorm2d(256)),
            *_conv_bn(nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.MaxPool2d(3, 2)),
            *_conv_bn(nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512)))
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netcnnlip = nn.Sequential(
            *_conv_bn(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(96),
                      nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_conv_bn(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256),
                      nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1))),
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256),
                      nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_conv_bn(nn.Conv3d(256, 512, (1, 6, 6)), nn.BatchNorm3d(512)))

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_lips(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def mfcc(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, coefficients: int = 13, filters: int = 26,
         nfft: int = 512, preemphasis: float = 0.97, lifter: int = 22) -> np.ndarray:
    """(N,) audio -> (steps, 13) MFCCs with python_speech_features' defaults: 25 ms rectangular frames every 10 ms
    (the last zero-padded), pre-emphasis, power spectrum / nfft, 26 triangular mel filters over 0..sr/2, log,
    orthonormal DCT-II, sinusoidal lifter, and coefficient 0 replaced by the log frame energy."""
    signal = np.asarray(waveform, np.float64)
    signal = np.append(signal[0], signal[1:] - preemphasis * signal[:-1])
    length, step = round(0.025 * sample_rate), round(0.01 * sample_rate)
    count = 1 if len(signal) <= length else 1 + math.ceil((len(signal) - length) / step)
    signal = np.concatenate([signal, np.zeros((count - 1) * step + length - len(signal))])
    frames = signal[np.arange(length)[None, :] + step * np.arange(count)[:, None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    tiny = np.finfo(float).eps
    energy = power.sum(1)
    energy[energy == 0] = tiny

    def hz_to_mel(hz):
        return 2595 * np.log10(1 + hz / 700)

    mels = np.linspace(0, hz_to_mel(sample_rate / 2), filters + 2)
    bins = np.floor((nfft + 1) * 700 * (10 ** (mels / 2595) - 1) / sample_rate)
    bank = np.zeros((filters, nfft // 2 + 1))
    for j in range(filters):
        low, centre, high = bins[j], bins[j + 1], bins[j + 2]
        rising = np.arange(int(low), int(centre))
        falling = np.arange(int(centre), int(high))
        bank[j, rising] = (rising - low) / (centre - low)
        bank[j, falling] = (high - falling) / (high - centre)
    energies = power @ bank.T
    energies[energies == 0] = tiny
    # orthonormal DCT-II of the log energies, first `coefficients` rows only
    k, n = np.arange(coefficients)[:, None], np.arange(filters)[None, :]
    dct = np.sqrt(2 / filters) * np.cos(np.pi * k * (2 * n + 1) / (2 * filters))
    dct[0] /= np.sqrt(2)
    cepstra = np.log(energies) @ dct.T
    cepstra *= 1 + (lifter / 2) * np.sin(np.pi * np.arange(coefficients) / lifter)
    cepstra[:, 0] = np.log(energy)
    return cepstra


@dataclass
class SyncScores:
    """SyncNet's verdict on one video: Sync-C (higher is better), Sync-D (lower is better), the offset in frames as
    the release reports it (the best shift: positive when the audio runs ahead of the lips) and the windows measured."""

    confidence: float
    distance: float
    offset: int
    windows: int


def sync_embeddings(model: SyncNet, frames, waveform: np.ndarray, batch_size: int = 20
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings, (W, 1024) each, of every 5-frame window of a video's face crops, (H, W, 3) uint8
    RGB frames at 25 fps (a list or an array), and its 16 kHz audio in [-1, 1]. Frames become float tensors one
    batch of windows at a time, so memory beyond the uint8 frames stays bounded."""
    coefficients = torch.from_numpy(mfcc(np.asarray(waveform, np.float64) * 32768)).float().T  # (13, steps)
    windows = min(len(frames), len(waveform) * FPS // SAMPLE_RATE) - WINDOW_FRAMES
    device = next(model.parameters()).device
    lips, audio = [], []
    for start in range(0, max(windows, 0), batch_size):
        index = range(start, min(windows, start + batch_size))
        needed = np.stack([np.asarray(f) for f in frames[index.start: index.stop + WINDOW_FRAMES - 1]])
        faces = torch.from_numpy(needed).permute(0, 3, 1, 2).float()
        faces = F.interpolate(faces, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        faces = faces.flip(1)  # RGB -> BGR in 0..255, what the release's network was trained on
        clips = torch.stack([faces[i - index.start: i - index.start + WINDOW_FRAMES] for i in index]).transpose(1, 2)
        steps = torch.stack([coefficients[:, i * MFCC_PER_FRAME: i * MFCC_PER_FRAME + WINDOW_MFCC] for i in index])
        with torch.inference_mode():
            lips.append(model.embed_lips(clips.to(device)).cpu())
            audio.append(model.embed_audio(steps[:, None].to(device)).cpu())
    if not lips:
        return torch.zeros(0, 1024), torch.zeros(0, 1024)
    return torch.cat(lips), torch.cat(audio)


def sync_scores(lips: torch.Tensor, audio: torch.Tensor, max_shift: int = MAX_SHIFT) -> SyncScores:
    """Sync-C/D from lip and audio embeddings (W, D): the offset search of the SyncNet release (zero embeddings
    beyond the ends, distances with torch's pairwise_distance and its eps 1e-6)."""
    if len(lips) == 0:
        return SyncScores(float("nan"), float("nan"), 0, 0)
    span = 2 * max_shift + 1
    padded = F.pad(audio, (0, 0, max_shift, max_shift))
    distances = torch.stack([F.pairwise_distance(lips[[i]].expand(span, -1), padded[i: i + span])
                             for i in range(len(lips))])  # (W, shifts)
    mean = distances.mean(0)
    smallest, index = mean.min(0)
    return SyncScores(confidence=float(mean.median() - smallest), distance=float(smallest),
                      offset=max_shift - int(index), windows=len(lips))


def load_syncnet(path: str | os.PathLike | None = None, folder: str | os.PathLike | None = None) -> SyncNet:
    """The SyncNet release's `syncnet_v2.model` from `path`, or from `folder` under its published name
    (`files.METRIC_FILES`)."""
    path = find_metric_file("syncnet", path, folder, suffixes=(".safetensors",))
    return load_strict(SyncNet(), read_state_dict(path), path)
