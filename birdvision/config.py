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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from birdvision.runs.artifacts import write_text

PACKAGE_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A user mistake in a recipe, a preset or a command-line override."""


@dataclass(frozen=True)
class Bounds:
    """What a schema value may be, checked after every layer is merged (``None`` always passes)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of bounds, or None."""
        if value is None:
            return None
        if self.choices is not None:
            return None if value in self.choices else f"expected one of {', '.join(map(str, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # non-numbers (e.g. devices="auto") are for the type checker and Lightning
        if value != value:
            return "expected a number, got nan"
        for bound, ok, word in ((self.ge, value >= (self.ge or 0), ">="), (self.gt, value > (self.gt or 0), ">"),
                                (self.le, value <= (self.le or 0), "<="), (self.lt, value < (self.lt or 0), "<")):
            if bound is not None and not ok:
                return f"must be {word} {_num(bound)}"
        return None

    def describe(self) -> str:
        """The bounds as text for --help, e.g. ``0 <= x <= 1``."""
        if self.choices is not None:
            return "|".join(map(str, self.choices))
        lo = f"{_num(self.ge)} <= " if self.ge is not None else f"{_num(self.gt)} < " if self.gt is not None else ""
        hi = f" <= {_num(self.le)}" if self.le is not None else f" < {_num(self.lt)}" if self.lt is not None else ""
        return f"{lo}x{hi}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def bounded(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **bounds: Any) -> Any:
    """A schema field with :class:`Bounds` (``ge``, ``gt``, ``le``, ``lt``, ``choices``) checked on load.

    For a list field the bounds apply to each element.
    """
    if "choices" in bounds:
        bounds["choices"] = tuple(bounds["choices"])
    return field(default=default, default_factory=default_factory, metadata={"bounds": Bounds(**bounds)})


def validate(cfg: DictConfig, schema: Any, prefix: str = "") -> None:
    """Raise :class:`ConfigError` naming the first value outside its schema bounds."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, value = f"{prefix}{f.name}", cfg.get(f.name) if cfg is not None else None
        if dataclasses.is_dataclass(hints[f.name]):
            validate(value, hints[f.name], key + ".")
            continue
        bounds = f.metadata.get("bounds")
        if bounds is None:
            continue
        for v in (list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]):
            why = bounds.problem(v)
            if why:
                raise ConfigError(f"{key}={value!r}: {why}")


# ----------------------------------------------------------------------------- schema (fit)


@dataclass
class AugmentConfig:
    """Photo augmentations for training only; evaluation resizes and normalises only."""

    hflip: bool = True  # mirror left-right half the time (birds face both ways)
    perspective: float = bounded(0.2, ge=0, le=1)  # distortion scale; 0 switches it off
    rotation_deg: float = bounded(15.0, ge=0, le=180)  # +- degrees; 0 switches it off
    affine_translate: float = bounded(0.1, ge=0, le=1)  # fraction of the image size; 0 switches it off
    affine_scale: float = bounded(0.1, ge=0, lt=1)  # +- scale change; 0 switches it off


@dataclass
class MelConfig:
    """Mel spectrogram frontend (birdvision.data.audio.mel.MelFrontend); stored with every checkpoint and export."""

    n_fft: int = bounded(2048, ge=16, le=65536)  # FFT window in samples (64 ms at 32 kHz)
    # samples between frames (16 ms at 32 kHz: 313 frames per 5 s window)
    hop_length: int = bounded(512, ge=1, le=65536)
    n_mels: int = bounded(128, ge=1, le=1024)  # mel bands: the spectrogram's height
    f_min_hz: float = bounded(20.0, ge=0)  # lowest band edge
    f_max_hz: float = bounded(16000.0, gt=0)  # highest band edge (at most sample_rate / 2)
    top_db: float | None = bounded(80.0, gt=0)  # floor: dB below the reference kept; None = no floor
    ref: str = bounded("max", choices=("max", "fixed"))  # max: dB relative to each window's peak (level-invariant) | fixed: relative to 1.0
    normalize: str = bounded("fixed", choices=("fixed", "none"))  # fixed: (dB - norm_mean_db) / norm_std_db | none
    norm_mean_db: float = -48.0  # measured over the real recordings
    norm_std_db: float = bounded(16.0, gt=0)  # measured over the real recordings
    in_chans: int = bounded(1, choices=(1, 3))  # 1: first conv adapted by summing its RGB filters; 3: mel repeated


@dataclass
class AudioAugmentConfig:
    """Training-only augmentations (birdvision.data.audio.augment, which checks a section with augment_config);
    no flips or rotations."""

    enabled: bool = True  # false: no waveform or spectrogram augmentation at all
    shift_p: float = bounded(0.5, ge=0, le=1)  # probability of moving the window within its recording (real context, no circular roll)
    shift_max_seconds: float = bounded(1.0, ge=0)  # largest shift
    stretch_p: float = bounded(0.0, ge=0, le=1)  # about 20 ms per window on CPU, so off by default
    # [low, high] speed factor of a time stretch
    stretch_rate: list[float] = bounded(default_factory=lambda: [0.9, 1.1], gt=0, le=4)
    pitch_p: float = bounded(0.3, ge=0, le=1)  # probability of a pitch shift
    pitch_semitones: float = bounded(2.0, ge=0, le=24)  # +- semitones
    gain_p: float = bounded(0.5, ge=0, le=1)  # probability of a gain change
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])  # [low, high] dB
    mix_p: float = bounded(0.0, ge=0, le=1)  # probability of mixing in a background recording (needs background_paths)
    # [low, high] signal-to-background ratio of the mix
    mix_snr_db: list[float] = field(default_factory=lambda: [6.0, 20.0])
    # recordings (files or folders) without the target species, for mix_p
    background_paths: list[str] = field(default_factory=list)
    noise_p: float = bounded(0.5, ge=0, le=1)  # probability of adding white Gaussian noise (std drawn from noise_amplitude)
    noise_amplitude: list[float] = bounded(default_factory=lambda: [0.0, 0.015], ge=0, le=1)  # the seed study's best: 0.015
    spec_p: float = bounded(0.5, ge=0, le=1)  # probability of SpecAugment masks on a training spectrogram
    time_masks: int = bounded(2, ge=0)  # SpecAugment: time masks per spectrogram
    time_mask_frames: int = bounded(24, ge=0)  # SpecAugment: widest time mask, in frames
    freq_masks: int = bounded(2, ge=0)  # SpecAugment: frequency masks per spectrogram
    freq_mask_bins: int = bounded(12, ge=0)  # SpecAugment: widest frequency mask, in mel bands


@dataclass
class NoCallConfig:
    """Spectrogram mode's no-call class (birdvision.data.audio.background): what an empty window is; predict never writes it."""

    enabled: bool = True  # add the class; false = species only (every window gets some species)
    quiet_db: float | None = bounded(25.0, gt=0)  # training windows whose loudest 50 ms is this far below their recording's loud frames become no-call windows; null = none
    synthetic: int = bounded(32, ge=0)  # generated noise recordings (2 windows long) for training; valid gets its split's share, test none; 0 = none


@dataclass
class AudioConfig:
    """Spectrogram mode: how recordings become windows."""

    sample_rate: int = bounded(32000, ge=1000, le=768000)  # every recording is resampled to this (Hz)
    clip_seconds: float = bounded(5.0, gt=0, le=600)  # one window: what the model sees per prediction
    hop_seconds: float | None = bounded(2.5, gt=0, le=600)  # training windows' hop; null = clip_seconds (no overlap)
    stereo: str = bounded("mix", choices=("mix", "split"))  # mix | split (each channel a sample of the same recording group)
    highpass_hz: float | None = bounded(None, ge=0)  # e.g. 1400 as in the seed study
    min_window_dbfs: float | None = bounded(None, le=0)  # drop training windows quieter than this, e.g. -60
    cache_mb: float = bounded(512.0, ge=0)  # decoded recordings kept in memory per worker
    mel: MelConfig = field(default_factory=MelConfig)  # the spectrogram
    augment: AudioAugmentConfig = field(default_factory=AudioAugmentConfig)  # training only
    nocall: NoCallConfig = field(default_factory=NoCallConfig)  # the no-call class


@dataclass
class DataConfig:
    """Where the samples come from and how they are batched."""

    mode: str = bounded("image", choices=("image", "audio"))  # image | audio
    root: str | None = None  # BIRDS-525 folder, class-folder tree; None = embedded demo data
    manifest: str | None = None  # path,label,split[,group,...] CSV, e.g. from birdvision.audit
    # Files named in birds.csv or data.manifest must be inside the data root (data.root; for a
    # manifest without it, the folder the audit that wrote it audited, else the manifest's own
    # folder), symlinks and .. resolved; others are left out unread. true allows any path.
    allow_outside_root: bool = False
    background: str | None = None  # spectrogram mode: a folder of recordings without bird calls; every window is a no-call window
    shards: str | None = None  # LitData shard set (folder or s3:// URL) from python -m birdvision.shards; photos only
    image_size: int | None = bounded(None, ge=16, le=4096)  # None = the backbone's own input size
    batch_size: int = bounded(32, ge=1)  # per device; the global batch is this x devices x nodes
    eval_batch_size: int | None = bounded(None, ge=1)  # None = batch_size
    num_workers: int = bounded(2, ge=0, le=256)  # data-loading processes per device
    valid_fraction: float = bounded(0.15, ge=0, lt=1)  # used only when the data has no fixed splits
    test_fraction: float = bounded(0.15, ge=0, lt=1)  # used only when the data has no fixed splits
    max_per_class: int | None = bounded(None, ge=1)  # cap samples per class and split (quick experiments)
    balance: str = bounded("none", choices=("none", "sampler", "loss"))  # imbalanced training split: see data/balance.py
    balance_beta: float = bounded(0.999, gt=0, lt=1)  # balance=loss: effective-number beta
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # photos, training only


@dataclass
class ModelConfig:
    """Backbone choice and its weights."""

    # a torchvision builder name (efficientnet_b0, resnet18, convnext_tiny) or efficientnet_lite0..2
    backbone: str = "efficientnet_b0"
    pretrained: bool = True  # start from ImageNet weights (torch cache, weights_path or the Lite packages)
    weights_path: str | None = None  # a local state_dict file instead of the torchvision cache
    drop_rate: float | None = bounded(None, ge=0, lt=1)  # dropout before the new head; None keeps the backbone's
    channels_last: bool = False  # NHWC memory layout (faster convolutions on recent GPUs)


@dataclass
class OptimConfig:
    """One-cycle AdamW."""

    lr: float = bounded(1e-3, gt=0, le=10)  # the one-cycle peak
    weight_decay: float = bounded(0.01, ge=0)  # AdamW's decoupled weight decay
    pct_start: float = bounded(0.25, gt=0, lt=1)  # share of the steps spent rising to lr
    div_factor: float = bounded(25.0, ge=1)  # the cycle starts at lr / div_factor
    final_div_factor: float = bounded(1e4, ge=1)  # and ends at lr / (div_factor * final_div_factor)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)  # cross-entropy label smoothing


@dataclass
class FinetuneConfig:
    """Staged fine-tuning: head only first, then everything."""

    mode: str = bounded("staged", choices=("staged", "embeddings"))  # staged: head-only warm-up then all layers | embeddings: only a head on cached frozen embeddings
    head_init: str = bounded("random", choices=("random", "embeddings"))  # staged: random | embeddings = start from a head fitted on cached embeddings (LP-FT)
    warmup_epochs: int = bounded(2, ge=0)  # staged: head-only epochs before the backbone is unfrozen
    backbone_lr_scale: float = bounded(0.1, ge=0, le=10)  # backbone lr relative to the head after unfreezing
    freeze_bn: bool = False  # keep batch-norm statistics pretrained for the whole run (small data sets)
    ema_decay: float | None = bounded(None, gt=0, lt=1)  # exponential moving average of the weights per optimiser step (validated, checkpointed and exported); None = off
    embedding_cache: str | None = None  # mode=embeddings: cache folder; None = ~/.cache/birdvision/embeddings


PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")


@dataclass
class TrainerConfig:
    """Passed to lightning.Trainer; multi-GPU/multi-node runs need no code change."""

    max_epochs: int = bounded(12, ge=1, le=100000)  # warm-up epochs included
    accelerator: str = "auto"  # auto | cpu | gpu | ...
    devices: Any = "auto"  # auto | N | [ids]
    precision: str | None = bounded(None, choices=PRECISIONS)  # None = bf16-mixed on GPUs that support it, else 32-true
    strategy: str = "auto"  # auto | ddp | ... (DDP across devices and nodes)
    num_nodes: int = bounded(1, ge=1)  # machines in a multi-node run
    # a fraction (<= 1) or a count of batches per epoch (quick runs)
    limit_train_batches: float | None = bounded(None, gt=0)
    limit_val_batches: float | None = bounded(None, gt=0)  # the same for validation
    log_every_n_steps: int = bounded(10, ge=1)  # training metrics logged every N optimiser steps
    deterministic: bool = False  # deterministic kernels (slower; bit-identical reruns on GPU)
    gradient_clip_val: float | None = bounded(None, gt=0)  # clip the gradient norm to this; None = no clipping
    checkpoint_every_n_steps: int | None = bounded(None, ge=1)  # also write last.ckpt mid-epoch (long epochs, shards)


@dataclass
class ThresholdConfig:
    """Decision thresholds chosen on the validation split after fit / evaluate, stored in the checkpoint and exports."""

    fpr: float | None = bounded(0.01, gt=0, lt=1)  # per class: the lowest score whose one-vs-rest false-positive rate on validation is at most this
    precision: float | None = bounded(None, gt=0, le=1)  # instead of fpr: the lowest score whose validation precision is at least this
    presence_fpr: float | None = bounded(0.01, gt=0, lt=1)  # call models with a no-call class: a window where no species passes still gets its best species when 1 - p(no-call) passes the threshold that lets this share of validation no-call windows through; null = off
    ood_far: float = bounded(0.2, gt=0, lt=1)  # photos: abstain ("unknown") below the max probability that accepts this fraction of generated non-bird images
    ood_images: int = bounded(20, ge=0, le=10000)  # photos: generated non-bird images per kind (10 kinds) to pick on, as many again to measure on; 0 = no abstention
    ood: str | None = None  # photos: a folder of real non-bird (or unknown-species) images, measured in the abstention table


@dataclass
class TuneConfig:
    """Optional learning-rate range test before training."""

    lr_find: bool = False  # run the range test and use its suggestion as optim.lr


@dataclass
class FitConfig:
    """Everything ``python -m birdvision.fit`` reads."""

    recipe: str = "effnet_b0"  # recipes/NAME.yaml (set with recipe=NAME)
    output_dir: str = "runs"  # runs go to OUTPUT_DIR/<recipe>/<timestamp>/
    resume: str | None = None  # latest | PATH to a run folder or checkpoint
    seed: int = bounded(42, ge=0, lt=2**32)  # splits, initialisation, data order and augmentation
    test_after_fit: bool = True  # score best.ckpt on the test split after training
    evaluate_after_fit: bool = True  # reports, calibration and the run's report.html on the best checkpoint
    data: DataConfig = field(default_factory=DataConfig)  # where samples come from
    audio: AudioConfig = field(default_factory=AudioConfig)  # spectrogram mode (data.mode=audio)
    model: ModelConfig = field(default_factory=ModelConfig)  # the backbone
    optim: OptimConfig = field(default_factory=OptimConfig)  # the optimiser and its schedule
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # which layers train when
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # lightning.Trainer
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)  # decisions chosen on valid after fit
    tune: TuneConfig = field(default_factory=TuneConfig)  # learning-rate range test


# ----------------------------------------------------------------------------- loading


def preset_dirs(name: str | None) -> list[Path]:
    """Where presets of kind ``name`` (``recipes``, ``data_checks``) live; none for a command without named presets.

    Inside the package when installed from a wheel (the build copies them there),
    otherwise at the repository root beside the package.
    """
    if name is None:
        return []
    return [d for d in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name) if d.is_dir()]


def available_presets(preset_dir: str | None) -> list[str]:
    """Names of the presets of one kind, without ``_base``."""
    names = set()
    for d in preset_dirs(preset_dir):
        names.update(p.stem for p in d.glob("*.yaml") if not p.stem.startswith("_"))
    return sorted(names)


def _find_preset(preset_dir: str | None, name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in preset_dirs(preset_dir):
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    known = available_presets(preset_dir)
    if not known:
        raise ConfigError(f"unknown preset {name!r}: this command ships no named presets; give a YAML file of keys "
                          "(preset=my_settings.yaml) or the keys themselves")
    kind = preset_dir[:-1] if preset_dir and preset_dir.endswith("s") else preset_dir
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {kind} {name!r}.{hint} Available: {', '.join(known)}")


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


def _is_str_key(t: Any) -> bool:
    """``str`` or ``str | None``: a value given on the command line is kept as typed (null stays null)."""
    if t is str:
        return True
    return typing.get_origin(t) in (typing.Union, types.UnionType) and set(typing.get_args(t)) == {str, type(None)}


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


def _field_bounds(schema: Any, key: str) -> Bounds | None:
    *parents, leaf = key.split(".")
    for p in parents:
        schema = typing.get_type_hints(schema)[p]
    f = next(f for f in dataclasses.fields(schema) if f.name == leaf)
    return f.metadata.get("bounds")


def help_text(schema: Any, *, prog: str, preset_key: str, preset_dir: str | None, description: str = "") -> str:
    """A --help page listing the presets and every key with its type and default."""
    known = available_presets(preset_dir)
    lines = [f"usage: python -m {prog} {preset_key}=NAME [key=value ...]"
             if known else f"usage: python -m {prog} [key=value ...] [{preset_key}=FILE.yaml]", ""]
    if description:
        lines += [description, ""]
    lines.append(f"{preset_key}s ({preset_dir}/): {', '.join(known)}" if known
                 else f"{preset_key}=FILE.yaml: keys from a YAML file (no named presets ship for this command)")
    lines += ["", "keys (type = default):"]
    defaults = OmegaConf.structured(schema)
    for key, t in schema_keys(schema).items():
        if dataclasses.is_dataclass(t):
            continue
        bounds = _field_bounds(schema, key)
        rng = f"  [{bounds.describe()}]" if bounds else ""
        lines.append(f"  {key} ({_type_name(t)}) = {OmegaConf.select(defaults, key)}{rng}")
    return "\n".join(lines)


def load_config(
    schema: Any,
    argv: list[str],
    *,
    preset_key: str,
    preset_dir: str | None = None,
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
        if value is not None and _is_str_key(known[key]):
            value = raw  # keep strings verbatim: "1e-3", "on" or "-" (stdin) must not turn into numbers/bools/lists
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
    validate(cfg, schema)
    return cfg


def parse_cli(
    schema: Any,
    argv: list[str] | None,
    *,
    preset_key: str,
    preset_dir: str | None = None,
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
