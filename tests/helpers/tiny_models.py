"""Tiny untrained networks shared by the tests: the data flow is under test, not the pictures."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2Config

from imtalker import GeneratorConfig, RendererConfig, save_model
from imtalker.config import DiscriminatorConfig
from imtalker.models.audio import AudioEncoder
from imtalker.models.generator import MotionGenerator
from imtalker.models.mel import MelAudioEncoder, MelConfig
from imtalker.models.renderer import IMTRenderer

RENDERER = RendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32),
                          motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, const_channels=8, num_heads=4)
# the discriminator of configs/renderer-128-tiny.yaml: 0.19M parameters instead of the published widths' 47M
DISCRIMINATOR = DiscriminatorConfig(image_size=128, channels={128: 8, 64: 16, 32: 32, 16: 32, 8: 32, 4: 32},
                                    max_channels=32)
GENERATOR = GeneratorConfig(hidden_dim=64, depth=2, num_heads=4, audio_dim=32)
WAV2VEC2 = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
MEL = MelConfig(hidden_dim=32, feature_dim=32)


def save_tiny_weights(folder: Path, front_end: str = "wav2vec2", seed: int = 0) -> Path:
    """A weights folder of tiny random networks: renderer, generator and a wav2vec2 or log-mel audio encoder."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    save_model(IMTRenderer(RENDERER), folder / "renderer.safetensors")
    save_model(MotionGenerator(GENERATOR), folder / "generator.safetensors")
    encoder = AudioEncoder(WAV2VEC2) if front_end == "wav2vec2" else MelAudioEncoder(MEL)
    save_model(encoder, folder / "audio_encoder.safetensors")
    return folder
