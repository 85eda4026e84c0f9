"""Renderer training (Lightning, published losses) on a prepared dataset, on CPU with a tiny renderer."""

from __future__ import annotations

import dataclasses

import lightning
import numpy as np
import pytest
import torch

import imtalker
from imtalker.config import DemoRendererConfig
from imtalker.models.demo_renderer import DemoRenderer
from imtalker.training.data import RendererPairDataset
from imtalker.training.losses import PUBLISHED_RENDERER_LOSS_WEIGHTS, VGG19Features
from imtalker.training.renderer_module import RendererModule, RendererTrainingConfig, training_config_from
from imtalker.training.run import export_run
from imtalker.training.trainer import fit
from helpers.tiny_models import DISCRIMINATOR

NO_GAN = {name: weight for name, weight in PUBLISHED_RENDERER_LOSS_WEIGHTS.items() if name != "adversarial"}
QUIET = dict(enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
             devices=1, loggers=("csv",))


class Terms(lightning.Callback):
    """Collects the logged training terms of every step."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def reconstruction_l1(module: RendererModule, batch) -> float:
    with torch.no_grad():
        fake, _ = module.gen(batch["driving"], batch["source"])
    return float((fake - batch["driving"]).abs().mean())


def test_items_pair_frames_of_one_clip_with_another_clip(prepared, tiny_renderer_config):
    data = RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=10)
    item = data[3]
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "source": (3, 128, 128), "driving": (3, 128, 128), "other": (3, 128, 128), "mask": (1, 128, 128)}
    assert 0 < item["mask"].mean() < 0.2 and 0 <= item["driving"].min() and item["driving"].max() <= 1
    torch.testing.assert_close(data[3]["driving"], item["driving"])  # an index always gives the same sample
    assert RendererPairDataset(prepared.folder, "train", 256, samples_per_epoch=1)[0]["source"].shape[-1] == 256


def test_loss_goes_down_and_checkpoint_loads_and_renders(prepared, tiny_renderer_config, tmp_path):
    torch.manual_seed(0)
    # a dozen steps: the reconstruction term leads, so its progress is not hidden by the young GAN's noise
    weights = {**PUBLISHED_RENDERER_LOSS_WEIGHTS, "consistency": 0.1, "adversarial": 0.05}
    module = RendererModule(tiny_renderer_config, RendererTrainingConfig(lr=2e-3, batch_size=4, weights=weights),
                            DISCRIMINATOR)
    train = RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=48)
    probe = torch.utils.data.default_collate([train[i] for i in range(4)])
    before = reconstruction_l1(module, probe)
    terms = Terms()
    val = RendererPairDataset(prepared.folder, "val", 128, samples_per_epoch=4)
    trainer = fit(module, train, val, max_steps=12, default_root_dir=tmp_path, callbacks=[terms], **QUIET)
    trained = {k: v.clone() for k, v in module.gen.state_dict().items()}  # before a probe moves BatchNorm counters
    after = reconstruction_l1(module, probe)
    assert trainer.global_step == 12  # one step per batch, generator and discriminator together
    assert after < 0.9 * before, (before, after)
    assert {"train/l1", "train/consistency", "train/adversarial", "train/disc"} <= set(terms.steps[-1])
    assert "train/perceptual" not in terms.steps[-1]  # no VGG19 file given
    metrics = trainer.callback_metrics
    assert np.isfinite(float(metrics["val/psnr"])) and 0 < float(metrics["val/ssim"]) <= 1
    assert list((tmp_path / "samples").glob("step_*.png"))

    renderer = imtalker.load_renderer(tmp_path / "checkpoints" / "last.ckpt")  # reads our checkpoint directly
    assert renderer.config == tiny_renderer_config
    torch.testing.assert_close(renderer.state_dict(), trained)
    source = renderer.encode_source(probe["source"][:1])
    frames = renderer.render(source, renderer.encode_motion(probe["driving"]))
    assert frames.shape == (4, 3, 128, 128) and torch.isfinite(frames).all()


def test_without_a_gan_term_no_discriminator_is_built_or_saved(prepared, tiny_renderer_config, tmp_path):
    torch.manual_seed(0)
    training = RendererTrainingConfig(lr=2e-3, batch_size=4, weights=NO_GAN)
    module = RendererModule(tiny_renderer_config, training)
    assert module.disc is None and len(module.configure_optimizers().param_groups) == 1
    train = RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=40)
    probe = torch.utils.data.default_collate([train[i] for i in range(4)])
    before = reconstruction_l1(module, probe)
    terms = Terms()
    fit(module, train, max_steps=10, default_root_dir=tmp_path, callbacks=[terms], **QUIET)
    trained = {k: v.clone() for k, v in module.gen.state_dict().items()}
    assert reconstruction_l1(module, probe) < 0.9 * before
    assert "train/adversarial" not in terms.steps[-1] and "train/disc" not in terms.steps[-1]
    assert terms.steps[-1]["train/motion_std"] > 0  # logged to catch a collapsed motion encoder
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("disc.") for k in state)
    renderer = imtalker.load_renderer(tmp_path / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(renderer.state_dict(), trained)


def test_vgg_weights_add_the_perceptual_and_region_terms(prepared, tiny_renderer_config, tmp_path):
    torch.manual_seed(0)
    vgg_path = tmp_path / "vgg19.pth"
    torch.save(VGG19Features().state_dict(), vgg_path)  # torchvision layout (features.N.weight/bias)
    module = RendererModule(tiny_renderer_config, RendererTrainingConfig(batch_size=2, vgg_path=str(vgg_path)),
                            DISCRIMINATOR)
    terms = Terms()
    train = RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=2)
    fit(module, train, max_steps=1, default_root_dir=tmp_path / "run", callbacks=[terms], **QUIET)
    assert {"train/perceptual", "train/region"} <= set(terms.steps[-1])
    assert all(np.isfinite(v) for v in terms.steps[-1].values())
    # the fixed VGG19 is not part of the checkpoint: it comes from its own file
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not any(k.startswith("vgg.") for k in state) and any(k.startswith("disc.") for k in state)


def test_lpips_files_add_val_lpips_and_stay_out_of_the_checkpoint(prepared, tiny_renderer_config, tmp_path):
    from imtalker.metrics.lpips import LPIPS

    torch.manual_seed(0)
    folder = tmp_path / "metrics"
    folder.mkdir()
    state = LPIPS("alex").state_dict()  # random backbone and heads under the published file names
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, folder / "alexnet-owt-7be5be79.pth")
    torch.save({k: v.abs() for k, v in state.items() if k.startswith("lin")}, folder / "alex.pth")
    training = RendererTrainingConfig(batch_size=2, weights=NO_GAN, metric_weights=str(folder))
    module = RendererModule(tiny_renderer_config, training)
    data = RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=2)
    val = RendererPairDataset(prepared.folder, "val", 128, samples_per_epoch=2)
    trainer = fit(module, data, val, max_steps=1, default_root_dir=tmp_path / "run", **QUIET)
    assert float(trainer.callback_metrics["val/lpips"]) > 0
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not any(k.startswith("lpips.") for k in saved)


def test_defaults_are_the_published_recipe_and_a_recipe_names_its_terms(tiny_renderer_config):
    defaults = dataclasses.asdict(RendererTrainingConfig())
    assert defaults["weights"] == {"l1": 1.0, "perceptual": 10.0, "region": 100.0, "consistency": 1.0,
                                   "adversarial": 1.0}
    assert training_config_from({"weights": {"l1": 1, "region_l1": 2}}).weights == {"l1": 1.0, "region_l1": 2.0}
    with pytest.raises(ValueError, match=r"unknown renderer loss terms \['alignment'\]; known: l1, perceptual, "
                                         r"region, region_l1, motion_landmarks, consistency, adversarial, warp, "
                                         r"flow_landmarks"):
        training_config_from({"weights": {"l1": 1.0, "alignment": 0.1}})
    with pytest.raises(ValueError, match="no renderer loss term"):
        RendererModule(tiny_renderer_config, RendererTrainingConfig(weights={"l1": 0.0})).generator_loss(
            {"driving": torch.rand(2, 3, 128, 128), "source": torch.rand(2, 3, 128, 128)})


def test_landmarks_come_with_the_frames_at_the_training_size(prepared):
    data = RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=10, with_landmarks=True)
    item = data[2]
    assert item["source_landmarks"].shape == item["driving_landmarks"].shape == (478, 2)
    big = RendererPairDataset(prepared.folder, "train", 256, samples_per_epoch=10, with_landmarks=True)[2]
    torch.testing.assert_close(big["driving_landmarks"], 2 * item["driving_landmarks"], equal_nan=True)
    known = torch.isfinite(item["driving_landmarks"]).all(-1)
    assert known.any() and (item["driving_landmarks"][known] >= -5).all()
    assert (item["driving_landmarks"][known] <= 133).all()  # pixels of the 128 px frame, give or take the border


@pytest.mark.slow  # ~20 s: `python -m pytest -m slow` runs it
def test_motion_landmark_probe_trains_the_motion_encoder_and_stays_out_of_the_renderer(prepared, tiny_renderer_config,
                                                                                        tmp_path):
    torch.manual_seed(0)
    assert RendererModule(tiny_renderer_config).landmark_probe is None  # published recipe: no probe
    weights = {**NO_GAN, "motion_landmarks": 1.0}
    module = RendererModule(tiny_renderer_config, RendererTrainingConfig(lr=2e-3, batch_size=4, weights=weights))
    encoder_before = {k: v.clone() for k, v in module.gen.latent_token_encoder.state_dict().items()}
    steps = Terms()  # the same four pairs every step (seed 2: in 20 steps seeds 0 and 1 moved it by 15-25%, 2 by 60%)
    fit(module, RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=4, with_landmarks=True, seed=2),
        max_steps=20, default_root_dir=tmp_path, callbacks=[steps], **QUIET)
    first, last = steps.steps[0]["train/motion_landmarks"], steps.steps[-1]["train/motion_landmarks"]
    assert last < 0.5 * first, (first, last)
    assert any(not torch.equal(v, module.gen.latent_token_encoder.state_dict()[k]) for k, v in encoder_before.items())
    exported = export_run(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "weights")
    assert exported.step == 20
    renderer = imtalker.load_renderer(exported.written[0])
    assert set(renderer.state_dict()) == set(module.gen.state_dict())  # the probe is not part of the model
    with pytest.raises(ValueError, match="landmarks"):
        module.generator_loss(torch.utils.data.default_collate(
            [RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=2)[i] for i in range(2)]))


@pytest.mark.slow  # ~20 s: `python -m pytest -m slow` runs it
def test_warp_terms_train_the_demo_renderers_source_warp(prepared, tiny_renderer_config, tmp_path):
    training = RendererTrainingConfig(lr=2e-3, batch_size=4, weights={**NO_GAN, "warp": 1.0, "flow_landmarks": 1.0})
    with pytest.raises(ValueError, match=r"\['warp', 'flow_landmarks'\] need a renderer with a source warp"):
        RendererModule(tiny_renderer_config, training)
    torch.manual_seed(0)
    config = DemoRendererConfig(**dataclasses.asdict(tiny_renderer_config))
    module = RendererModule(config, training)
    assert isinstance(module.gen, DemoRenderer)
    steps = Terms()  # the same four pairs every step
    fit(module, RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=4, with_landmarks=True),
        max_steps=20, default_root_dir=tmp_path, callbacks=[steps], **QUIET)
    first, last = steps.steps[0]["train/flow_landmarks"], steps.steps[-1]["train/flow_landmarks"]
    assert last < first, (first, last)
    assert module.gen.source_warp.field_head[-1].weight.abs().sum() > 0  # the flow left zero
    assert "train/warp" in steps.steps[-1]
    renderer = imtalker.load_renderer(tmp_path / "checkpoints" / "last.ckpt")  # the checkpoint names its variant
    assert type(renderer) is DemoRenderer and renderer.config == config
    with pytest.raises(ValueError, match="flow_landmarks loss term needs batches with landmarks"):
        module.generator_loss(torch.utils.data.default_collate(
            [RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=2)[i] for i in range(2)]))


def test_motion_lr_scale_gives_the_motion_path_its_own_rate(tiny_renderer_config):
    no_gan = NO_GAN
    published = RendererModule(tiny_renderer_config, RendererTrainingConfig(lr=1e-3, weights=no_gan))
    (group,) = published.configure_optimizers().param_groups
    assert len(group["params"]) == len(list(published.gen.parameters())) and group["lr"] == 1e-3
    module = RendererModule(tiny_renderer_config, RendererTrainingConfig(lr=1e-3, weights=no_gan, motion_lr_scale=10))
    rest, motion = module.configure_optimizers().param_groups
    assert rest["lr"] == 1e-3 and motion["lr"] == pytest.approx(1e-2)
    motion_ids = {id(p) for p in motion["params"]}
    for name in ("latent_token_encoder", "adapt", "latent_token_decoder"):
        assert all(id(p) in motion_ids for p in getattr(module.gen, name).parameters())
    assert not any(id(p) in motion_ids for p in module.gen.frame_decoder.parameters())
    assert len(rest["params"]) + len(motion["params"]) == len(list(module.gen.parameters()))


def test_renderer_ema_keep_last_and_best_checkpoints(prepared, tiny_renderer_config, tmp_path):
    torch.manual_seed(0)
    module = RendererModule(tiny_renderer_config, RendererTrainingConfig(lr=2e-3, batch_size=2, weights=NO_GAN,
                                                                        ema_decay=0.5))
    train = RendererPairDataset(prepared.folder, "train", 128, samples_per_epoch=8)
    val = RendererPairDataset(prepared.folder, "val", 128, samples_per_epoch=2)
    fit(module, train, val, max_steps=4, default_root_dir=tmp_path, checkpoint_every_n_steps=1,
        keep_last_checkpoints=2, keep_best_checkpoints=1, val_check_interval=2, **QUIET)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert [n for n in names if n.startswith("step-")] == ["step-0000003.ckpt", "step-0000004.ckpt"]
    assert len([n for n in names if n.startswith("best-")]) == 1 and "last.ckpt" in names
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    raw = {k: v for k, v in state["state_dict"].items() if k.startswith("gen.")}
    assert set(state["ema_state_dict"]) == set(raw) and not any(k.startswith("gen_ema.") for k in state["state_dict"])
    assert any(not torch.equal(state["ema_state_dict"][k], raw[k]) for k in raw)  # an average, not a copy
    exported = export_run(tmp_path, tmp_path / "weights")  # the EMA weights, as for the generator
    renderer = imtalker.load_renderer(exported.written[0])
    torch.testing.assert_close(renderer.state_dict(), {k[4:]: v for k, v in state["ema_state_dict"].items()})
    resumed = RendererModule(tiny_renderer_config, module.training_config)
    fit(resumed, train, max_steps=5, default_root_dir=tmp_path, **QUIET)  # the EMA comes back from the checkpoint
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
