"""Learning-rate range test: wired through fit, its plot, and its fallback when the sweep is too short."""

import torch

from birdvision.config import FitConfig, load_config
from birdvision.data.build import build_pipeline
from birdvision.data.datamodule import BirdDataModule
from birdvision.data.manifest import manifest_digest
from birdvision.fit import build_module, build_trainer
from birdvision.fit import main as fit_main
from birdvision.training.lr_find import find_lr
from tests.conftest import fit_args


def test_fit_with_lr_find_uses_the_suggestion(demo_photos, tmp_path):
    args = fit_args(demo_photos, tmp_path, "trainer.max_epochs=1", "test_after_fit=false", "tune.lr_find=true")
    assert fit_main(args) == 0
    run = next(tmp_path.glob("demo/*"))
    assert (run / "lr_find.png").stat().st_size > 1000
    assert not list(run.glob(".lr_find*.ckpt"))  # Lightning's temporary checkpoint is cleaned up
    lr = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["lr"]
    assert lr > 0 and lr != 3e-3  # the demo recipe's rate was replaced by the suggestion


def _parts(demo_photos, tmp_path):
    cfg = load_config(FitConfig, fit_args(demo_photos, tmp_path, "trainer.max_epochs=1"),
                      preset_key="recipe", preset_dir="recipes")
    pipe = build_pipeline(cfg)
    module = build_module(cfg, pipe, manifest_digest(pipe.samples))
    dm = BirdDataModule(pipe.datasets, batch_size=cfg.data.batch_size, num_workers=0)
    trainer, _ = build_trainer(cfg, tmp_path, enable_progress=False)
    return trainer, module, dm


def test_too_short_a_sweep_keeps_the_recipe_rate(demo_photos, tmp_path):
    trainer, module, dm = _parts(demo_photos, tmp_path)
    before = float(module.hparams.lr)
    assert find_lr(trainer, module, dm, tmp_path, num_training=5) == before
    assert (tmp_path / "lr_find.png").is_file()
    assert trainer.fit_loop.max_epochs == 1  # the temporary epoch limit is put back
