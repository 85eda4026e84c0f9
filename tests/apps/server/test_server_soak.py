"""Soak (slow, a few minutes): `imtalker serve` with the demo model, flooded by 768 kHz f32le streams for two
minutes next to normal clients. Memory stays within 256 MB of the baseline while it lasts and within 128 MB
20 s after, and every normal request is served. The same run as `python benchmarks/bench_server_flood.py`.

    python -m pytest -q -m slow tests/apps/server/test_server_soak.py -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_server_flood.py"


@pytest.mark.slow
def test_flooding_and_normal_clients_for_two_minutes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[3] / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(SCRIPT), "--json", "--window", "120"], capture_output=True,
                            text=True, timeout=900, cwd=tmp_path, env=env)
    assert result.stdout.strip(), result.stderr[-3000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nbaseline {numbers['baseline_mb']:.0f} MB, peak {numbers['peak_mb']:.0f} MB, 20 s after "
          f"{numbers['after_mb']:.0f} MB; flood took {numbers['flood_mb']:.0f} MB over {numbers['flood_streams']} "
          f"streams; normal served {numbers['served']}, failed {len(numbers['failed'])}")
    assert numbers["peak_mb"] - numbers["baseline_mb"] <= 256
    assert numbers["after_mb"] - numbers["baseline_mb"] <= 128
    assert not numbers["failed"] and sum(numbers["served"].values()) > 0
    assert not numbers["traceback"]
    assert result.returncode == 0
