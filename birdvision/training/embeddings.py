"""A head on cached embeddings: run the frozen backbone once per sample, then train only the classifier.

This is how BirdNET-Analyzer's custom classifiers and Perch's agile modelling work, and
what users without a GPU need: embeddings are the input of the model's final Linear
(taken with a forward hook, so every registered backbone works), computed on the
deterministic evaluation view of each sample (no augmentation) and cached by content:
the key is the file's SHA-256 (plus the window for recordings) under a digest of the
backbone's weights and the preprocessing spec, so renamed or moved files hit the cache
and changed weights or preprocessing never do.

The head is multinomial logistic regression (full-batch L-BFGS on standardised features,
the standardisation folded back into the Linear), its L2 strength chosen on the
validation split. The result is an ordinary checkpoint of the whole network, which
evaluate, export and predict read like any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from birdvision import __version__
from birdvision.console import progress_bar
from birdvision.models.factory import get_module
from birdvision.models.registry import get_spec
from birdvision.runs.artifacts import atomic_path, sha256_file
from birdvision.spec import from_dict as spec_from_dict

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "birdvision" / "embeddings"
L2_GRID = (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # mean-loss L2 strengths tried on valid (sklearn's C=1 is ~5e-4 here)


# ----------------------------------------------------------------------------- keys


def model_digest(net: nn.Module, backbone: str, preprocess: dict[str, Any]) -> str:
    """A digest of everything that decides an embedding: the weights in front of the head and the preprocessing."""
    head = get_spec(backbone).classifier + "."
    h = hashlib.sha256(json.dumps({"backbone": backbone, "preprocess": preprocess}, sort_keys=True).encode())
    for k, v in net.state_dict().items():
        if not k.startswith(head):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def item_keys(dataset: Dataset) -> list[str]:
    """A content key per item: the file's SHA-256, plus window and channel for recordings."""
    hashes: dict[str, str] = {}

    def file_hash(path: str, known: str) -> str:
        if path not in hashes:
            hashes[path] = known or sha256_file(path)
        return hashes[path]

    n = len(dataset)  # type: ignore[arg-type]
    if hasattr(dataset, "item_sample"):  # recordings: one item per window (and channel)
        keys = []
        for i in range(n):
            s = dataset.item_sample(i)  # type: ignore[attr-defined]
            keys.append(f"{file_hash(s.path, s.sha256)}@{s.start_s}:{s.end_s}#{dataset.item_channel(i)}")  # type: ignore[attr-defined]
        return keys
    samples = dataset.samples  # type: ignore[attr-defined]
    return [file_hash(s.path, s.sha256) for s in samples[:n]]


# ----------------------------------------------------------------------------- the cache


class EmbeddingCache:
    """Embeddings of one model (``digest``) by item key, in one file written atomically."""

    def __init__(self, folder: str | Path, digest: str) -> None:
        self.path = Path(folder).expanduser() / f"{digest}.pt"
        self.rows: dict[str, torch.Tensor] = {}
        self.loaded = 0
        if self.path.is_file():
            try:
                data = torch.load(self.path, map_location="cpu", weights_only=True)
                self.rows = dict(zip(data["keys"], data["embeddings"], strict=True))
                self.loaded = len(self.rows)
            except Exception as e:  # a damaged cache is rebuilt, never trusted
                log.warning("ignoring unreadable embedding cache %s (%s: %s)", self.path, type(e).__name__, e)

    def save(self) -> None:
        if len(self.rows) == self.loaded:
            return
        keys = list(self.rows)
        with atomic_path(self.path) as tmp:
            torch.save({"keys": keys, "embeddings": torch.stack([self.rows[k] for k in keys])}, tmp)
        self.loaded = len(self.rows)


def _capture_head_input(net: nn.Module, backbone: str) -> tuple[Callable[[], torch.Tensor], Any]:
    """A forward hook on the final Linear; returns (getter of its last input, hook handle)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_module, inputs, _output):
        seen["x"] = inputs[0].detach()

    handle = get_module(net, get_spec(backbone).classifier).register_forward_hook(hook)
    return (lambda: seen["x"]), handle


@torch.no_grad()
def embed(
    module: nn.Module,
    backbone: str,
    dataset: Dataset,
    cache: EmbeddingCache,
    *,
    batch_transform: nn.Module | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    label: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings [N, D], labels [N]) for every item of ``dataset``; only items missing from the cache run the network."""
    keys = item_keys(dataset)
    labels = torch.as_tensor(_targets(dataset), dtype=torch.long)
    todo = [i for i, k in enumerate(keys) if k not in cache.rows]
    if todo:
        # The loader draws worker seeds from the global generator: forked, so what follows (a fine-tuning
        # run's shuffling and augmentation) is the same whether the cache was cold or warm.
        with torch.random.fork_rng():
            _embed_missing(module, backbone, dataset, cache, keys, todo, batch_transform=batch_transform,
                           batch_size=batch_size, num_workers=num_workers, label=label)
    return torch.stack([cache.rows[k] for k in keys]), labels


def _embed_missing(module: nn.Module, backbone: str, dataset: Dataset, cache: EmbeddingCache, keys: list[str],
                   todo: list[int], *, batch_transform: nn.Module | None, batch_size: int, num_workers: int,
                   label: str) -> None:
    """Run the network over the items ``todo`` and store their head inputs in ``cache`` (saved even on an interrupt)."""
    module.eval()
    get, handle = _capture_head_input(module, backbone)
    loader = DataLoader(Subset(dataset, todo), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    done = 0
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"embedding {label}", total=len(todo))
            for x, _ in loader:
                if batch_transform is not None:
                    x = batch_transform(x)
                module(x)
                for row in get().float():
                    cache.rows[keys[todo[done]]] = row.clone()
                    done += 1
                bar.advance(task, len(x))
    finally:
        handle.remove()
        cache.save()  # what was computed survives an interrupt


def _targets(dataset: Dataset) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return list(targets)
    idx = dataset.class_to_idx  # type: ignore[attr-defined]
    return [idx[s.label] for s in dataset.samples]  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- the head


def fit_linear_head(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [K, D], bias [K]) of multinomial logistic regression on raw features ``x``.

    Trained on standardised features (L-BFGS converges in tens of steps there); the scaling
    is folded back so that ``x @ W.T + b`` needs no preprocessing.
    """
    x = x.double()
    mu, sigma = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sigma
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = w / sigma
        bias = b - weight @ mu
    return weight.float(), bias.float()


def choose_head(
    train: tuple[torch.Tensor, torch.Tensor], valid: tuple[torch.Tensor, torch.Tensor] | None, num_classes: int,
    grid: Sequence[float] = L2_GRID,
) -> dict[str, Any]:
    """The head whose L2 strength scores best on valid (accuracy, then NLL); without valid the middle of the grid."""
    if valid is None or len(valid[1]) == 0:
        l2 = sorted(grid)[len(grid) // 2]
        w, b = fit_linear_head(*train, num_classes, l2=l2)
        return {"weight": w, "bias": b, "l2": l2, "tried": []}
    best: dict[str, Any] | None = None
    tried = []
    for l2 in grid:
        w, b = fit_linear_head(*train, num_classes, l2=l2)
        logits = valid[0] @ w.T + b
        acc = float((logits.argmax(1) == valid[1]).float().mean())
        nll = float(F.cross_entropy(logits, valid[1]))
        tried.append({"l2": l2, "val_acc": round(acc, 4), "val_nll": round(nll, 4)})
        if best is None or (acc, -nll) > (best["val_acc"], -best["val_nll"]):
            best = {"weight": w, "bias": b, "l2": l2, "val_acc": acc, "val_nll": nll}
    assert best is not None
    best["tried"] = tried
    return best


def save_checkpoint(module: L.LightningModule, path: str | Path, extra: dict[str, Any]) -> Path:
    """An ordinary birdvision checkpoint (state dict + hyperparameters) of ``module``, written atomically."""
    ck = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "birdvision_version": __version__,
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(ck, tmp)
    return Path(path)


# ----------------------------------------------------------------------------- the fit mode


class HeadOnEmbeddings:
    """Train ``module``'s head on cached embeddings of the pipeline's samples, all splits embedded once."""

    def __init__(self, module: L.LightningModule, samples: Sequence[Any], classes: Sequence[str],
                 preprocess: dict[str, Any], *, cache_dir: str | Path | None = None, batch_size: int = 64,
                 num_workers: int = 0) -> None:
        self.module, self.samples, self.classes, self.preprocess = module, list(samples), list(classes), preprocess
        self.backbone = module.hparams.backbone
        self.cache = EmbeddingCache(cache_dir or DEFAULT_CACHE, model_digest(module.net, self.backbone, preprocess))
        self.spec = spec_from_dict(preprocess)
        self.transform = self.spec.frontend()
        self.batch_size, self.num_workers = batch_size, num_workers

    @property
    def head(self) -> nn.Linear:
        """The network's final Linear, the only layer this mode trains."""
        return get_module(self.module.net, get_spec(self.backbone).classifier)

    def embed_dataset(self, dataset: Dataset, label: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and labels of a dataset built from the checkpoint's preprocessing spec."""
        return embed(self.module.net, self.backbone, dataset, self.cache, batch_transform=self.transform,
                     batch_size=self.batch_size, num_workers=self.num_workers, label=label)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        chosen = [s for s in self.samples if s.split == name and s.active]
        return self.embed_dataset(self.spec.eval_dataset(chosen, self.classes), name) if chosen else None

    def fit_head(self, splits: Sequence[str] = ("train", "valid", "test")) -> dict[str, Any]:
        """Embed ``splits``, fit the head on train (L2 chosen on valid) and put it into the network; returns metrics."""
        warm = len(self.cache.rows)
        data = {name: self.split(name) for name in splits}
        if data.get("train") is None:
            raise ValueError("no training samples to fit a head on")
        head = choose_head(data["train"], data.get("valid"), len(self.classes))
        linear = self.head
        with torch.no_grad():
            linear.weight.copy_(head["weight"])
            linear.bias.copy_(head["bias"])
        result: dict[str, Any] = {"head/l2": head["l2"], "head/l2_tried": head["tried"],
                                  "embeddings/cached_before": warm, "embeddings/total": len(self.cache.rows),
                                  "embeddings/cache": str(self.cache.path)}
        for name, prefix in (("train", "train"), ("valid", "val"), ("test", "test")):
            if data.get(name) is not None:
                x, y = data[name]
                with torch.no_grad():
                    logits = linear(x)
                result[f"{prefix}/acc"] = float((logits.argmax(1) == y).float().mean())
                result[f"{prefix}/loss"] = float(F.cross_entropy(logits, y))
        return result

    def fit(self, checkpoint_dir: Path) -> dict[str, Any]:
        """:meth:`fit_head` on all splits, then ``best.ckpt`` and ``last.ckpt`` of the whole network; returns metrics."""
        result = self.fit_head()
        if "val/acc" in result:  # the one head there is, chosen on valid: the run's best, as compare reads it
            result["val/acc_best"] = result["val/acc"]
        extra = {"birdvision_head_fit": {k: v for k, v in result.items() if k.startswith("head/")}}
        best = save_checkpoint(self.module, checkpoint_dir / "best.ckpt", extra)
        save_checkpoint(self.module, checkpoint_dir / "last.ckpt", extra)
        result["best_checkpoint"] = str(best)
        return result

    def logits(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits and labels of a dataset from its cached embeddings (what evaluate would compute, without the backbone)."""
        x, y = self.embed_dataset(dataset, "evaluation")
        with torch.no_grad():
            return self.head(x).numpy(), y.numpy().astype(np.int64)
