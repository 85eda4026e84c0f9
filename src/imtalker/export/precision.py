"""Half precision where the hardware runs it: bfloat16 / float16 autocast on a CPU only with native instructions.

oneDNN runs bfloat16 matrix work natively on x86 CPUs with `avx512_bf16` or AMX tiles (and float16 with
`avx512_fp16` or `amx_fp16`). Without them it converts to float32 and back around every operator: on an AVX2-only
AMD EPYC a 3x3 convolution ran 6x slower under bfloat16 autocast than in float32, and the published-size renderer
about 14x slower (docs/performance.md). Asked for such a precision on such a CPU, the pipelines keep float32 and say
so, as whisper does for float16 on a CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# x86 CPU flags (as /proc/cpuinfo lists them) with which oneDNN runs each half precision natively
NATIVE_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


def x86_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's flags from /proc/cpuinfo, or None where it lists none (not Linux, or not x86: ARM says "Features")."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return None


def autocast_dtype(dtype: torch.dtype | None, device: torch.device,
                   flags: set[str] | None = None) -> torch.dtype | None:
    """The autocast dtype to use for `dtype` on `device`: `dtype` itself, or None (float32) on an x86 CPU that would
    only emulate it, with a warning. `flags` defaults to this machine's (`x86_cpu_flags`); where they are unknown,
    `dtype` is trusted."""
    if dtype not in NATIVE_FLAGS or device.type != "cpu":
        return dtype
    flags = x86_cpu_flags() if flags is None else flags
    native = NATIVE_FLAGS[dtype]
    if flags is None or any(flag in flags for flag in native):
        return dtype
    name = "bfloat16" if dtype == torch.bfloat16 else "float16"
    logger.warning("this CPU has no %s instructions (%s), so %s would run several times slower than float32 "
                   "here: using float32", name, " or ".join(native), name)
    return None
