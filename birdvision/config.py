"""Configuration: typed schemas, YAML presets (recipes, data checks), strict ``key=value`` overrides.

Every CLI is ``python -m birdvision.VERB preset=NAME a.b=c ...``. The preset names a YAML
file (``recipes/NAME.yaml`` for ``fit``, ``data_checks/NAME.yaml`` for ``audit``) that is
merged over ``_base.yaml`` and the schema's defaults; each override is then merged on top.
Keys are checked against the schema (a typo names the closest valid key) and values are
type-checked by OmegaConf, so a wrong type names the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from birdvision.artifacts import write_text

PACKAGE_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A user mistake in a recipe, a preset or a command-line override."""


# ----------------------------------------------------------------------------- schema (fit)


@dataclass
class AugmentConfig:
    """Photo augmentations for training only; evaluation resizes and normalises only."""

    hflip: bool = True
    perspective: float = 0.2  # distortion scale; 0 switches it off
    rotation_deg: float = 15.0
    affine_translate: float = 0.1  # fraction of the image size; 0 switches it off
    affine_scale: float = 0.1  # +- scale change; 0 switches it off


@dataclass
class MelConfig:
    """Mel spectrogram frontend (birdvision.data.mel.MelFrontend); stored with every checkpoint and export."""

    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min_hz: float = 20.0
    f_max_hz: float = 16000.0
    top_db: float | None = 80.0
    ref: str = "max"  # max: dB relative to each window's peak (level-invariant) | fixed: relative to 1.0
    normalize: str = "fixed"  # fixed: (dB - norm_mean_db) / norm_std_db | none
    norm_mean_db: float = -48.0  # measured over the real recordings
    norm_std_db: float = 16.0
    in_chans: int = 1  # 1: first conv adapted by summing its RGB filters; 3: mel repeated


@dataclass
class AudioAugmentConfig:
    """Training-only augmentations (birdvision.data.audio_augment); no flips or rotations."""

    enabled: bool = True
    shift_p: float = 0.5
    shift_max_seconds: float = 1.0
    stretch_p: float = 0.0  # about 20 ms per window on CPU, so off by default
    stretch_rate: list[float] = field(default_factory=lambda: [0.9, 1.1])
    pitch_p: float = 0.3
    pitch_semitones: float = 2.0
    gain_p: float = 0.5
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])
    mix_p: float = 0.0
    mix_snr_db: list[float] = field(default_factory=lambda: [6.0, 20.0])
    background_paths: list[str] = field(default_factory=list)
    noise_p: float = 0.5
    noise_amplitude: list[float] = field(default_factory=lambda: [0.0, 0.015])  # the seed study's best: 0.015
    spec_p: float = 0.5
    time_masks: int = 2
    time_mask_frames: int = 24
    freq_masks: int = 2
    freq_mask_bins: int = 12


@dataclass
class AudioConfig:
    """Spectrogram mode: how recordings become windows."""

    sample_rate: int = 32000
    clip_seconds: float = 5.0
    hop_seconds: float | None = 2.5  # training windows' hop; null = clip_seconds (no overlap)
    stereo: str = "mix"  # mix | split (each channel a sample of the same recording group)
    highpass_hz: float | None = None  # e.g. 1400 as in the seed study
    min_window_dbfs: float | None = None  # drop training windows quieter than this, e.g. -60
    cache_mb: float = 512.0  # decoded recordings kept in memory per worker
    mel: MelConfig = field(default_factory=MelConfig)
    augment: AudioAugmentConfig = field(default_factory=AudioAugmentConfig)


@dataclass
class DataConfig:
    """Where the samples come from and how they are batched."""

    mode: str = "image"  # image | audio
    root: str | None = None  # BIRDS-525 folder, class-folder tree; None = embedded demo data
    manifest: str | None = None  # path,label,split[,group,...] CSV, e.g. from birdvision.audit
    # Files named in birds.csv or data.manifest must be inside the data root (data.root; for a
    # manifest without it, the folder the audit that wrote it audited, else the manifest's own
    # folder), symlinks and .. resolved; others are left out unread. true allows any path.
    allow_outside_root: bool = False
    image_size: int | None = None  # None = the backbone's own input size
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 2
    valid_fraction: float = 0.15  # used only when the data has no fixed splits
    test_fraction: float = 0.15
    max_per_class: int | None = None  # cap samples per class and split (quick experiments)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """Backbone choice and its weights."""

    backbone: str = "efficientnet_b0"
    pretrained: bool = True
    weights_path: str | None = None  # a local state_dict file instead of the torchvision cache
    drop_rate: float | None = None  # dropout before the new head; None keeps the backbone's
    channels_last: bool = False


@dataclass
class OptimConfig:
    """One-cycle AdamW."""

    lr: float = 1e-3  # the one-cycle peak
    weight_decay: float = 0.01
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    label_smoothing: float = 0.0


@dataclass
class FinetuneConfig:
    """Staged fine-tuning: head only first, then everything."""

    mode: str = "staged"  # staged: head-only warm-up then all layers | embeddings: only a head on cached frozen embeddings
    head_init: str = "random"  # staged: random | embeddings = start from a head fitted on cached embeddings (LP-FT)
    warmup_epochs: int = 2
    backbone_lr_scale: float = 0.1  # backbone lr relative to the head after unfreezing
    freeze_bn: bool = False  # keep batch-norm statistics pretrained for the whole run (small data sets)
    embedding_cache: str | None = None  # mode=embeddings: cache folder; None = ~/.cache/birdvision/embeddings


@dataclass
class TrainerConfig:
    """Passed to lightning.Trainer; multi-GPU/multi-node runs need no code change."""

    max_epochs: int = 12
    accelerator: str = "auto"
    devices: Any = "auto"
    precision: str | None = None  # None = bf16-mixed on GPUs that support it, else 32-true
    strategy: str = "auto"
    num_nodes: int = 1
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    log_every_n_steps: int = 10
    deterministic: bool = False
    gradient_clip_val: float | None = None


@dataclass
class TuneConfig:
    """Optional learning-rate range test before training."""

    lr_find: bool = False


@dataclass
class FitConfig:
    """Everything ``python -m birdvision.fit`` reads."""

    recipe: str = "effnet_b0"
    output_dir: str = "runs"
    resume: str | None = None  # latest | PATH to a run folder or checkpoint
    seed: int = 42
    test_after_fit: bool = True
    evaluate_after_fit: bool = True  # reports, calibration and the run's report.html on the best checkpoint
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)


# ----------------------------------------------------------------------------- loading


def preset_dirs(name: str) -> list[Path]:
    """Where presets of kind ``name`` (``recipes``, ``data_checks``) live.

    Inside the package when installed from a wheel (the build copies them there),
    otherwise at the repository root beside the package.
    """
    return [d for d in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name) if d.is_dir()]


def available_presets(preset_dir: str) -> list[str]:
    """Names of the presets of one kind, without ``_base``."""
    names = set()
    for d in preset_dirs(preset_dir):
        names.update(p.stem for p in d.glob("*.yaml") if not p.stem.startswith("_"))
    return sorted(names)


def _find_preset(preset_dir: str, name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in preset_dirs(preset_dir):
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    known = available_presets(preset_dir)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {preset_dir[:-1] if preset_dir.endswith('s') else preset_dir} {name!r}.{hint} Available: {', '.join(known)}")


def schema_keys(schema: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> type for every leaf of a dataclass schema."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        t = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(t):
            out[key] = t
            out.update(schema_keys(t, key + "."))
        else:
            out[key] = t
    return out


def _check_keys(tree: Any, known: dict[str, Any], origin: str, prefix: str = "") -> None:
    if not isinstance(tree, dict):
        return
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if key not in known:
            _unknown_key(key, known, origin)
        if isinstance(v, dict) and dataclasses.is_dataclass(known[key]):
            _check_keys(v, known, origin, key + ".")


def _unknown_key(key: str, known: dict[str, Any], origin: str) -> None:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    if not close:  # a typo in the leaf name only: compare leaves within the same section
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in known}
        m = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[m[0]]] if m else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown key {key!r} in {origin}.{hint} (see --help for all keys)")


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is typing.Union:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return f"{_type_name(args[0])} or null" if len(args) == 1 else " | ".join(map(_type_name, args))
    if origin is not None:
        return str(t).replace("typing.", "")
    return getattr(t, "__name__", str(t))


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def _merge(cfg: DictConfig, tree: dict, known: dict[str, Any], origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, tree)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ""
        if key in known:
            got = OmegaConf.select(OmegaConf.create(tree), key, default=None)
            raise ConfigError(
                f"{key}={got!r} in {origin}: expected {_type_name(known[key])}"
            ) from None
        raise ConfigError(f"{origin}: {str(e).splitlines()[0]}") from None


def help_text(schema: Any, *, prog: str, preset_key: str, preset_dir: str, description: str = "") -> str:
    """A --help page listing the presets and every key with its type and default."""
    lines = [f"usage: python -m {prog} {preset_key}=NAME [key=value ...]", ""]
    if description:
        lines += [description, ""]
    lines.append(f"{preset_key}s ({preset_dir}/): {', '.join(available_presets(preset_dir))}")
    lines += ["", "keys (type = default):"]
    defaults = OmegaConf.structured(schema)
    for key, t in schema_keys(schema).items():
        if dataclasses.is_dataclass(t):
            continue
        lines.append(f"  {key} ({_type_name(t)}) = {OmegaConf.select(defaults, key)}")
    return "\n".join(lines)


def load_config(
    schema: Any,
    argv: list[str],
    *,
    preset_key: str,
    preset_dir: str,
    default_preset: str | None = None,
) -> DictConfig:
    """Build the config from the schema, ``_base.yaml``, the named preset and overrides."""
    known = schema_keys(schema)
    overrides: list[tuple[str, Any]] = []
    preset = default_preset
    for tok in argv:
        if "=" not in tok or tok.startswith("="):
            raise ConfigError(f"expected key=value, got {tok!r} (see --help)")
        key, raw = tok.split("=", 1)
        key = key.strip().lstrip("+")
        if key == preset_key:
            preset = raw
            continue
        if key not in known:
            _unknown_key(key, known, "the command line")
        if dataclasses.is_dataclass(known[key]):
            raise ConfigError(f"{key!r} is a section; set one of its keys, e.g. {key}.<name>=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if typing.get_origin(known[key]) is None and known[key] is str and value is not None:
            value = raw  # keep strings verbatim: "1e-3" or "on" must not turn into numbers/bools
        overrides.append((key, value))

    cfg = OmegaConf.structured(schema)
    layers: list[Path] = []
    for d in reversed(preset_dirs(preset_dir)):
        if (d / "_base.yaml").is_file():
            layers = [d / "_base.yaml"]
    if preset is not None:
        layers.append(_find_preset(preset_dir, preset))
    for path in layers:
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        _check_keys(tree, known, str(path))
        cfg = _merge(cfg, tree, known, str(path))
    for key, value in overrides:
        cfg = _merge(cfg, _nest(key, value), known, f"override {key}=")
    if preset is not None and preset_key in known:
        cfg[preset_key] = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    OmegaConf.set_readonly(cfg, False)
    return cfg


def parse_cli(
    schema: Any,
    argv: list[str] | None,
    *,
    preset_key: str,
    preset_dir: str,
    prog: str,
    description: str = "",
    default_preset: str | None = None,
) -> DictConfig:
    """Parse a CLI's arguments; ``--help`` prints the keys and exits."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text(schema, prog=prog, preset_key=preset_key, preset_dir=preset_dir, description=description))
        raise SystemExit(0)
    return load_config(schema, argv, preset_key=preset_key, preset_dir=preset_dir, default_preset=default_preset)


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Atomically save the resolved config."""
    return write_text(path, to_yaml(cfg))
