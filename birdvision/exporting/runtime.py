"""ONNX Runtime sessions configured the same way everywhere (export gate, inference, bench)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def default_threads() -> int:
    """Intra-op threads for this machine: the cores this process may run on (its CPU affinity, which
    container CPU limits and ``taskset`` narrow), not every core the host has."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_session(path: str | Path, *, threads: int = 0, providers: list[str] | None = None,
                 spinning: bool = True) -> Any:
    """An InferenceSession with a pinned intra-op pool (``threads=0``: :func:`default_threads`).

    Pinning matters on small machines: PyTorch's and ONNX Runtime's pools otherwise
    compete for the same cores. ``spinning=False`` stops idle workers busy-waiting, for
    processes that also run PyTorch between ONNX Runtime calls, or decode the next input
    in another thread while the model runs (predict).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads if threads > 0 else default_threads()
    so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # warnings about unused initializers etc. are noise for users
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def open_export(path: str | Path, *, threads: int = 0, providers: list[str] | None = None,
                spinning: bool = True) -> tuple[Any, dict[str, Any]]:
    """(session, metadata) of a birdvision export, refusing with one CheckpointError a file that is missing,
    empty, not ONNX / ORT, truncated, or whose metadata is damaged or does not describe its graph, and one
    that a ``model.json`` beside it does not describe (other labels, another run, another file's SHA-256)."""
    from birdvision.exporting.metadata import (
        MODEL_JSON,
        check_export,
        check_model_json,
        parse_metadata,
        read_model_json,
    )
    from birdvision.runs.checkpoint import CheckpointError

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"exported model {p} does not exist" if not p.exists() else f"{p} is not a file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes), not an ONNX model")
    try:
        session = make_session(p, threads=threads, providers=providers, spinning=spinning)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CheckpointError(f"{p} is not a loadable ONNX model: not ONNX, truncated or damaged ({first[:200]})") from None
    meta = parse_metadata(dict(session.get_modelmeta().custom_metadata_map), p)
    check_export(session, meta, p)
    card = p.parent / MODEL_JSON
    if card.is_file():
        check_model_json(read_model_json(card), p, meta, session, source=card)
    return session, meta
