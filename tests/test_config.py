from pathlib import Path

import pytest

from birdvision.config import ConfigError, FitConfig, available_presets, help_text, load_config


def load(*argv: str):
    return load_config(FitConfig, list(argv), preset_key="recipe", preset_dir="recipes", default_preset="effnet_b0")


def test_recipe_layers_base_and_overrides():
    cfg = load("recipe=resnet18", "trainer.max_epochs=3", "data.image_size=128", "model.pretrained=false")
    assert cfg.recipe == "resnet18"
    assert cfg.model.backbone == "resnet18"
    assert cfg.trainer.max_epochs == 3 and cfg.data.image_size == 128 and cfg.model.pretrained is False
    assert cfg.finetune.warmup_epochs == 2  # from _base.yaml


def test_every_study_recipe_exists_and_loads():
    for name in ["resnet18", "resnet34", "resnet50", "effnet_b0", "effnet_b1", "effnet_b2", "convnext_tiny"]:
        assert name in available_presets("recipes")
        cfg = load(f"recipe={name}")
        assert cfg.trainer.max_epochs == 12 and cfg.data.batch_size == 32 and cfg.data.image_size == 224


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match="trainer.max_epochs"):
        load("trainer.max_epoch=3")
    with pytest.raises(ConfigError, match="data.image_size"):
        load("data.imagesize=3")


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"trainer.max_epochs.*int"):
        load("trainer.max_epochs=many")


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match="effnet_b0"):
        load("recipe=efnet_b0")


def test_string_values_stay_verbatim():
    cfg = load("data.root=1e-3")
    assert cfg.data.root == "1e-3"


def test_recipe_file_with_typo_is_rejected(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(ConfigError, match="model.backbone"):
        load(f"recipe={bad}")


def test_help_lists_recipes_and_keys():
    text = help_text(FitConfig, prog="birdvision.fit", preset_key="recipe", preset_dir="recipes")
    assert "effnet_b0" in text and "data.image_size" in text and "optim.lr (float)" in text


def test_a_command_without_named_presets_does_not_advertise_them(tmp_path):
    from birdvision.predict import PredictConfig

    text = help_text(PredictConfig, prog="birdvision.predict", preset_key="preset", preset_dir="predict_presets")
    assert "preset=NAME" not in text and "preset=FILE.yaml" in text
    with pytest.raises(ConfigError, match="ships no named presets") as e:
        load_config(PredictConfig, ["preset=fast"], preset_key="preset", preset_dir="predict_presets")
    assert "Available: " not in str(e.value)
    settings = tmp_path / "mine.yaml"
    settings.write_text("top_k: 3\n")  # a YAML file of keys still works
    cfg = load_config(PredictConfig, [f"preset={settings}"], preset_key="preset", preset_dir="predict_presets")
    assert cfg.top_k == 3


def test_help_piped_into_a_closed_reader_is_quiet():
    import subprocess
    import sys

    # the reader exits before the help is written: every write meets a closed pipe
    r = subprocess.run(f"{sys.executable} -m birdvision.fit --help | true", shell=True, capture_output=True,
                       text=True, timeout=120)
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr[-1000:]
