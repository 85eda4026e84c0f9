"""The face-state expert (`imtalker.training.expert`) and the renderer's `expert` loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imtalker.errors import InputError
from imtalker.metrics import pearson
from imtalker.training.data import RendererPairDataset, clip_folders
from imtalker.training.expert import (FACE_STATES, face_state_truth, load_face_state_expert, save_face_state_expert,
                                      train_face_state_expert)
from imtalker.training.losses import RendererLossWeights
from imtalker.training.renderer_module import RendererModule, RendererTrainingConfig
from imtalker.training.trainer import fit

from test_renderer_training import QUIET, Terms


@pytest.fixture(scope="module")
def fitted(synthetic_heldout):
    return train_face_state_expert(synthetic_heldout / "data", steps=150, batch_size=8)


def test_the_expert_learns_to_read_the_mouth_of_its_training_frames(synthetic_heldout, fitted):
    expert, report = fitted
    assert set(report) == set(FACE_STATES) | {f"{name}_mean_baseline" for name in FACE_STATES}
    assert all(np.isfinite(v) for v in report.values())
    clip = clip_folders(synthetic_heldout / "data", "train")[0]
    frames = torch.from_numpy(np.load(clip / "frames.npy")).permute(0, 3, 1, 2).float() / 255
    truth = face_state_truth(clip)
    assert truth.shape == (len(frames), len(FACE_STATES))
    with torch.no_grad():
        read = expert(frames).numpy()
    assert pearson(read[:, 0], truth[:, 0]) > 0.5


def test_a_fitted_expert_stays_frozen_and_round_trips(fitted, tmp_path):
    expert, _ = fitted
    assert not expert.training and not any(p.requires_grad for p in expert.parameters())
    expert.train()  # inside a training module: its BatchNorm statistics stay fixed
    assert not expert.training
    frames = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    loaded = load_face_state_expert(save_face_state_expert(expert, tmp_path / "expert.safetensors"))
    torch.testing.assert_close(loaded(frames), expert(frames))
    assert not loaded.training
    with pytest.raises(InputError, match="not found"):
        load_face_state_expert(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a face-state expert"):
        load_face_state_expert(tmp_path / "other.safetensors")


def test_ground_truth_only_for_synthetic_clips(prepared):
    with pytest.raises(InputError, match="synthetic ground truth"):
        face_state_truth(clip_folders(prepared.folder, "train")[0])


def test_renderer_expert_term_trains_and_stays_out_of_the_checkpoint(prepared, tiny_renderer_config, fitted,
                                                                   tmp_path):
    expert_file = save_face_state_expert(fitted[0], tmp_path / "expert.safetensors")
    weights = RendererLossWeights(adversarial=0.0, expert=1.0)
    with pytest.raises(ValueError, match="expert_path"):
        RendererModule(tiny_renderer_config, RendererTrainingConfig(weights=weights))
    torch.manual_seed(0)
    module = RendererModule(tiny_renderer_config, RendererTrainingConfig(batch_size=2, weights=weights,
                                                                         expert_path=str(expert_file)))
    terms = Terms()
    fit(module, RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=2), max_steps=2,
        default_root_dir=tmp_path / "run", callbacks=[terms], **QUIET)
    assert "train/expert" in terms.steps[-1] and np.isfinite(terms.steps[-1]["train/expert"])
    assert not module.expert.training  # the module trained; the expert did not
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not any(k.startswith("expert.") for k in state)
    module.load_state_dict(state)  # and a resumed run finds its expert again
