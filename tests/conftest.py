"""Shared fixtures: the golden-reference synthesis rule (tests/data/reference/README.md) and small models."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Under pytest-xdist (the README's test command) each worker process computes on one thread: two workers of two
# threads each on a 2-core machine wait on each other's cores (298 s for the suite instead of 518). The commands the
# tests start inherit the setting. A thread count set by the caller is kept.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"
ATOL = RTOL = 1e-4


def synth_array(seed: int, name: str, shape, mean: float, std: float) -> np.ndarray:
    """Deterministic tensor from its name: uniform with the given mean and standard deviation."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))
    n = int(np.prod(shape, dtype=np.int64))
    u = rng.random(n)
    # mean + std * sqrt(3) * (2u - 1), in place: the same float64 operations in the same order, no 1 GB temporaries
    u *= 2
    u -= 1
    u *= std * np.sqrt(3)
    u += mean
    return u.astype(np.float32).reshape(shape)


class Reference:
    """One network's golden files: its weight manifest and the recorded outputs."""

    def __init__(self, name: str):
        manifest = json.loads((REFERENCE_DIR / f"{name}_manifest.json").read_text())
        self.seed = manifest["seed"]
        self.entries = manifest["entries"]
        self.config = manifest.get("config")
        self.expected = np.load(REFERENCE_DIR / f"{name}_expected.npz")

    def input(self, name: str, shape, mean: float, std: float) -> torch.Tensor:
        return torch.from_numpy(synth_array(self.seed, f"input:{name}", shape, mean, std))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Synthesised weights for every non-structural entry (structural buffers come from the model)."""
        state = {}
        for entry in self.entries:
            if entry["kind"] == "uniform":
                array = synth_array(self.seed, entry["key"], entry["shape"], entry["mean"], entry["std"])
                state[entry["key"]] = torch.from_numpy(array)
            elif entry["kind"] == "constant":
                state[entry["key"]] = torch.full(entry["shape"], entry["value"], dtype=getattr(torch, entry["dtype"]))
        return state

    def structural(self) -> list[dict]:
        return [e for e in self.entries if e["kind"] == "structural"]

    def check_structural(self, state: dict[str, torch.Tensor]) -> None:
        """Every structural buffer the model computes itself hashes to the published bytes."""
        for entry in self.structural():
            assert entry["key"] in state, f"missing structural buffer {entry['key']}"
            array = state[entry["key"]].detach().cpu().numpy().astype(np.dtype(entry["dtype"]))
            assert list(array.shape) == entry["shape"], entry["key"]
            digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            assert digest == entry["sha256"], f"{entry['key']} differs from the published buffer"

    def keys(self) -> list[str]:
        return [e["key"] for e in self.entries]

    def names(self) -> list[str]:
        return sorted({k[: -len(".shape")] for k in self.expected.files if k.endswith(".shape")})

    def check(self, name: str, actual: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> None:
        """Compare a computed tensor with the recorded one (whole tensor or the recorded sample)."""
        z = self.expected
        actual = actual.detach().float().cpu().numpy()
        assert list(actual.shape) == z[f"{name}.shape"].tolist(), f"{name}: shape {actual.shape}"
        if f"{name}.full" in z.files:
            got, want = actual, z[f"{name}.full"]
        else:
            got, want = actual.reshape(-1)[z[f"{name}.idx"]], z[f"{name}.val"]
        np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=name)


@pytest.fixture(scope="session")
def renderer_reference() -> Reference:
    return Reference("renderer")


@pytest.fixture(scope="session")
def generator_reference() -> Reference:
    return Reference("generator")


@pytest.fixture(scope="session")
def discriminator_reference() -> Reference:
    return Reference("discriminator")


@pytest.fixture(scope="session")
def audio_reference() -> Reference:
    return Reference("audio")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synthetic_heldout(tmp_path_factory) -> Path:
    """Two 3-second synthetic clips (faces and voices the demo model never saw), prepared at 128 px; the corpus
    with its ground truth lies in `corpus/` beside the prepared `data/`."""
    from imtalker.data.synthetic import write_corpus
    from imtalker.training.prepare import PrepareConfig, prepare_dataset

    root = tmp_path_factory.mktemp("heldout")
    write_corpus(root / "corpus", clips=2, seed=11, seconds=3.0, size=256, progress=False)
    prepare_dataset(root / "corpus", root / "data", PrepareConfig(size=128, min_seconds=2.0))
    return root
