"""One prediction API for checkpoints and exported models: ``birdvision.load(path)``.

:func:`load` takes a ``.ckpt``, a run folder or an exported ``.onnx`` / ``.ort`` file and
returns a :class:`~birdvision.prediction.predictor.Predictor` that gives the same answer whichever
it was. Loading an export imports ONNX Runtime, not PyTorch (bare exports, whose preprocessing runs
outside the graph, and checkpoints load PyTorch when they are opened).

    >>> p = load("runs/effnet_b0/20250101-120000")
    >>> p.predict("robin.jpg", top_k=3)
    [('EUROPEAN ROBIN', 0.91), ...]
    >>> p.predict_batch(windows)  # float32 [B, T] for spectrogram models -> [B, K] probabilities
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from birdvision.exporting.runtime import open_export
from birdvision.prediction.onnx_engine import OnnxPredictor
from birdvision.prediction.predictor import EXPORT_SUFFIXES, InferenceError, Predictor

__all__ = ["EXPORT_SUFFIXES", "InferenceError", "Predictor", "load", "load_export"]


def load_export(path: str | Path, *, threads: int = 0, providers: list[str] | None = None,
                spinning: bool = True) -> Predictor:
    """A predictor for an exported ``.onnx`` / ``.ort`` file; one :class:`CheckpointError` for a bad file."""
    p = Path(path).expanduser()
    session, meta = open_export(p, threads=threads, providers=providers, spinning=spinning)
    kw = dict(source=p, classes=meta["classes"], preprocess=meta["preprocess"],
              temperature=float(meta.get("temperature", 1.0)), metadata=meta)
    if meta["input_kind"] in ("mel", "float_nchw"):
        from birdvision.prediction.torch_engine import BareOnnxPredictor  # PyTorch only for bare exports

        return BareOnnxPredictor(session=session, input_kind=meta["input_kind"], **kw)
    return OnnxPredictor(session=session, input_kind=meta["input_kind"], **kw)


def load(path: str | Path, *, threads: int = 0, providers: list[str] | None = None, spinning: bool = True,
         species: str | Path | Sequence[str] | None = None, species_renormalise: bool = True) -> Predictor:
    """A :class:`Predictor` from a checkpoint, a run folder, or an exported ``.onnx`` / ``.ort`` file.

    ``species``: a species list file or a list of names; answers are then restricted to them
    (:meth:`Predictor.restrict_species`, renormalised over the list unless ``species_renormalise=False``).

    Exports whose preprocessing is in the graph (``model.onnx``, ``model.int8.onnx``, ``.ort``) and bare
    photo exports run on ONNX Runtime without PyTorch; checkpoints and bare spectrogram exports (their mel
    frontend runs outside the graph) load PyTorch. ``threads=0`` picks the intra-op thread count for this
    machine (:func:`birdvision.exporting.runtime.default_threads`); ``spinning=False`` stops ONNX Runtime's
    idle workers busy-waiting (predict sets it while another thread decodes the next batch).
    """
    p = Path(path).expanduser()
    if p.suffix.lower() in EXPORT_SUFFIXES:
        predictor = load_export(p, threads=threads, providers=providers, spinning=spinning)
    else:
        from birdvision.prediction.torch_engine import load_checkpoint  # PyTorch only for checkpoints

        predictor = load_checkpoint(p, threads=threads)
    if species is not None:
        predictor.restrict_species(species, renormalise=species_renormalise)
    return predictor
