"""End to end through the audio-driven pipeline with small, untrained networks: speech -> mp4.

Until the bundled demo model lands this shows the whole data flow with random weights (the video shows noise, not a
face), using only files it makes itself: no downloads.

    python examples/quickstart.py --out quickstart
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config

import imtalker
from imtalker.constants import SAMPLE_RATE
from imtalker.models.audio import AudioEncoder
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.pipelines import AudioDrivenPipeline
from imtalker.io.video import save_frames_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="quickstart")
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

    # saved in our format and loaded back through the same path as converted published weights
    weights = out / "weights"
    imtalker.save_model(IMTRenderer(renderer_config), weights / "renderer.safetensors")
    imtalker.save_model(MotionGenerator(generator_config), weights / "generator.safetensors")
    imtalker.save_model(AudioEncoder(audio_config), weights / "audio_encoder.safetensors")
    pipe = AudioDrivenPipeline.from_pretrained(weights)

    # a drawn portrait and a vowel-like tone with a syllable rhythm
    yy, xx = np.meshgrid(np.linspace(-1, 1, 256), np.linspace(-1, 1, 256), indexing="ij")
    face = ((xx / 0.6) ** 2 + (yy / 0.8) ** 2 < 1).astype(np.float32)
    portrait = (np.stack([0.3 + 0.6 * face, 0.3 + 0.45 * face, 0.4 + 0.3 * face], axis=-1) * 255).astype(np.uint8)
    t = np.arange(int(args.seconds * SAMPLE_RATE)) / SAMPLE_RATE
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)

    video = pipe.to_file(out / "quickstart.mp4", portrait, (speech, SAMPLE_RATE), crop=False, seed=args.seed,
                         cfg_scale=2.0, nfe=5)
    frames = list(pipe.frames(portrait, (speech, SAMPLE_RATE), crop=False, seed=args.seed, cfg_scale=2.0, nfe=5))
    save_frames_png([frames[0], frames[len(frames) // 2]], out / "frames")
    print(f"wrote {video} ({len(frames)} frames, {len(speech) / SAMPLE_RATE:.2f} s) and sample frames in "
          f"{out / 'frames'}/")


if __name__ == "__main__":
    main()
