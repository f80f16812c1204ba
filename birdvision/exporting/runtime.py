"""ONNX Runtime sessions configured the same way everywhere (export gate, inference, bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_session(path: str | Path, *, threads: int = 0, providers: list[str] | None = None,
                 spinning: bool = True) -> Any:
    """An InferenceSession with a pinned intra-op pool (``threads=0``: ONNX Runtime's default).

    Pinning matters on small machines: PyTorch's and ONNX Runtime's pools otherwise
    compete for the same cores. ``spinning=False`` stops idle workers busy-waiting, for
    processes that also run PyTorch between ONNX Runtime calls.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # warnings about unused initializers etc. are noise for users
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
