"""Half precision only where the CPU runs it natively: elsewhere the pipelines keep float32 and say so."""

from __future__ import annotations

import logging

import torch

from helpers.tiny_models import RENDERER
from imtalker.export import precision
from imtalker.export.precision import autocast_dtype, x86_cpu_flags
from imtalker.models.renderer import IMTRenderer
from imtalker.pipelines import VideoDrivenPipeline

CPU = torch.device("cpu")
AVX2_ONLY = {"fpu", "sse2", "avx", "avx2", "fma"}


def test_half_precision_stays_where_the_cpu_has_its_instructions(caplog):
    with caplog.at_level(logging.WARNING):
        assert autocast_dtype(torch.bfloat16, CPU, AVX2_ONLY | {"avx512f", "avx512_bf16"}) == torch.bfloat16
        assert autocast_dtype(torch.bfloat16, CPU, AVX2_ONLY | {"amx_bf16", "amx_tile"}) == torch.bfloat16
        assert autocast_dtype(torch.float16, CPU, AVX2_ONLY | {"avx512_fp16"}) == torch.float16
        assert autocast_dtype(torch.bfloat16, torch.device("cuda"), AVX2_ONLY) == torch.bfloat16  # GPUs: as asked
        assert autocast_dtype(None, CPU, AVX2_ONLY) is None
    assert caplog.records == []


def test_half_precision_falls_back_to_float32_on_a_cpu_that_would_emulate_it(caplog):
    with caplog.at_level(logging.WARNING):
        assert autocast_dtype(torch.bfloat16, CPU, AVX2_ONLY) is None
        assert autocast_dtype(torch.float16, CPU, AVX2_ONLY | {"avx512_bf16"}) is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "no bfloat16 instructions (avx512_bf16 or amx_bf16)" in messages[0] and "using float32" in messages[0]
    assert "no float16 instructions" in messages[1]


def test_cpu_flags_come_from_cpuinfo_and_are_unknown_without_a_flags_line(tmp_path, monkeypatch):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert x86_cpu_flags(x86) == {"fpu", "avx2", "fma"}
    assert x86_cpu_flags(arm) is None and x86_cpu_flags(tmp_path / "missing") is None
    monkeypatch.setattr(precision, "x86_cpu_flags", lambda: None)
    assert autocast_dtype(torch.bfloat16, CPU) == torch.bfloat16  # flags unknown: the asked precision is trusted


def test_a_pipeline_asked_for_bf16_on_an_avx2_cpu_renders_in_float32(monkeypatch):
    monkeypatch.setattr(precision, "x86_cpu_flags", lambda: AVX2_ONLY)
    renderer = IMTRenderer(RENDERER).eval()
    assert VideoDrivenPipeline(renderer, dtype=torch.bfloat16).dtype is None
    monkeypatch.setattr(precision, "x86_cpu_flags", lambda: AVX2_ONLY | {"avx512_bf16"})
    assert VideoDrivenPipeline(renderer, dtype=torch.bfloat16).dtype == torch.bfloat16
