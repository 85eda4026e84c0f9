"""The shipped training configs, changed for a test and written where the test's run can read them."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def shipped_config(name: str, out: Path, training: dict | None = None, trainer: dict | None = None) -> Path:
    """`configs/NAME` with its `training` and `trainer` sections updated, written to `out`; returns `out`."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    config["training"].update(training or {})
    config["trainer"].update(trainer or {})
    out.write_text(yaml.safe_dump(config))
    return out
