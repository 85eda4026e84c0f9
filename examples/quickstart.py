"""End to end through the public API with small, untrained networks: audio -> motion -> frames -> PNG.

Until the bundled demo model lands this shows the data flow with random weights (the frames are noise-like),
using only files it makes itself: no downloads.

    python examples/quickstart.py --out quickstart_frames
"""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config

import imtalker
from imtalker.constants import SAMPLE_RATE
from imtalker.models.audio import AudioEncoder, num_frames_for_samples
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Minimal PNG writer for an (H, W, 3) uint8 image."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="quickstart_frames")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    torch.manual_seed(args.seed)

    renderer_config = imtalker.RendererConfig(image_size=128, feature_channels=(16, 16, 32, 32, 64, 64),
                                              motion_channels=(16, 32, 32, 64, 64, 64), adapt_dim=64)
    audio_config = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    generator_config = imtalker.GeneratorConfig(hidden_dim=128, depth=2, num_heads=4, audio_dim=64)

    # save in our format and load back, as a user would with converted published weights
    weights = out / "weights"
    renderer = imtalker.load_renderer(imtalker.save_model(IMTRenderer(renderer_config), weights / "renderer.safetensors"))
    generator = imtalker.load_generator(imtalker.save_model(MotionGenerator(generator_config),
                                                            weights / "generator.safetensors"))
    audio_encoder = imtalker.load_audio_encoder(imtalker.save_model(AudioEncoder(audio_config),
                                                                    weights / "audio_encoder.safetensors"))

    # a synthetic portrait and a vowel-like tone with a syllable rhythm
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    face = ((xx / 0.6) ** 2 + (yy / 0.8) ** 2 < 1).float()
    portrait = torch.stack([0.3 + 0.6 * face, 0.3 + 0.45 * face, 0.4 + 0.3 * face])[None]
    t = torch.arange(int(args.seconds * SAMPLE_RATE)) / SAMPLE_RATE
    speech = torch.sin(2 * torch.pi * 220 * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 4 * t))

    frames_count = num_frames_for_samples(speech.numel())
    with torch.inference_mode():
        features = audio_encoder(speech[None], frames_count)  # (1, T, 64)
        source = renderer.encode_source(portrait)
        motion = generator.sample(features, source.motion, cfg_scale=2.0, nfe=5, seed=args.seed)[0]  # (T, 32)
        frames = renderer.render(source, motion, batch_size=8)  # (T, 3, 128, 128)

    out.mkdir(parents=True, exist_ok=True)
    for i in (0, frames_count // 2, frames_count - 1):
        write_png(out / f"frame_{i:04d}.png", (frames[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    print(f"{frames_count} frames of {tuple(frames.shape[1:])} rendered from {speech.numel() / SAMPLE_RATE:.2f} s "
          f"of audio; sample frames and weights in {out}/")


if __name__ == "__main__":
    main()
