"""The engines a model is timed on, and how each runs one forward pass.

``torch`` is the checkpoint in PyTorch eager: what :func:`birdvision.benchmarking.table.timed_module` defines
(the network, with the mel frontend for call models, as the exported files run them). ``ort_fp32`` is the
exported ``model.onnx`` (preprocessing in the graph when it was exported that way), ``ort_bare`` the graph
without preprocessing (to price it), ``ort_int8`` and ``ort_fp16``; FP16 is timed only where ONNX Runtime
has a GPU provider: on CPU it runs through inserted casts and says nothing about a phone or a Jetson. The
phone runtimes (LiteRT ``.tflite``, ExecuTorch ``.pte``, optional extras) are asked for by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from birdvision.benchmarking.timing import pin_threads

DEFAULT_ENGINES = ("torch", "ort_fp32", "ort_bare", "ort_int8", "ort_fp16")
# phone runtimes (optional extras birdvision[litert] / birdvision[executorch]): asked for by name
PHONE_ENGINES = {"tflite": "tflite", "pte": "pte", "tflite_int8": "tflite_int8", "pte_int8": "pte_int8"}  # -> format
ENGINES = (*DEFAULT_ENGINES, *PHONE_ENGINES)
ENGINE_FILES = {"ort_fp32": "model.onnx", "ort_bare": "model.bare.onnx", "ort_int8": "model.int8.onnx",
                "ort_fp16": "model.fp16.onnx", "tflite": "model.tflite", "pte": "model.pte",
                "tflite_int8": "model.int8.tflite", "pte_int8": "model.int8.pte"}
ENGINE_PARITY = {"ort_fp32": "parity.json", "ort_bare": "parity.bare.json", "ort_int8": "parity.int8.json",
                 "ort_fp16": "parity.fp16.json", "tflite": "parity.tflite.json", "pte": "parity.pte.json",
                 "tflite_int8": "parity.int8.tflite.json", "pte_int8": "parity.int8.pte.json"}


def fp16_supported() -> bool:
    import onnxruntime as ort

    return any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))


def engine_calls(engine: str, target: str, batch_sizes: tuple[int, ...], threads: int) -> dict[int, Any]:
    """Zero-argument callables running one forward pass per batch size, model loaded once.

    ``target`` is the checkpoint for ``torch`` and the ONNX file for the others. Inputs are
    random but correctly shaped and typed (speed does not depend on pixel content).
    """
    pin_threads(threads)
    rng = np.random.default_rng(0)
    if engine == "torch":
        import torch

        from birdvision.benchmarking.table import timed_module
        from birdvision.runs.checkpoint import open_checkpoint

        module, example = timed_module(open_checkpoint(target))

        def torch_call(x: torch.Tensor):
            with torch.inference_mode():
                return module(x)

        return {b: (lambda x=torch.from_numpy(rng.standard_normal((b, *example.shape[1:]), dtype=np.float32)):
                    torch_call(x)) for b in batch_sizes}
    if engine in PHONE_ENGINES:
        return phone_calls(engine, target, batch_sizes, threads, rng)
    from birdvision.exporting.runtime import make_session

    providers = None
    if engine == "ort_fp16" and fp16_supported():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = make_session(target, threads=threads, providers=providers)
    inp = sess.get_inputs()[0]
    pre = json.loads(sess.get_modelmeta().custom_metadata_map.get("preprocess", "{}"))
    # a graph that resizes photos of any size is timed on photos at the model's size (the in-graph resize is then
    # a copy); larger photos add the resize: about 0.15 s for 12 Mpx on 2 cores
    dims = [d if isinstance(d, int) else int(pre.get("size", 1)) if inp.type == "tensor(uint8)" else 1
            for d in inp.shape[1:]]
    out = {}
    for b in batch_sizes:
        if inp.type == "tensor(uint8)":
            x = rng.integers(0, 256, (b, *dims), dtype=np.uint8)
        else:
            x = rng.standard_normal((b, *dims), dtype=np.float32)
        out[b] = lambda x=x: sess.run(None, {inp.name: x})
    return out


def phone_calls(engine: str, target: str, batch_sizes: tuple[int, ...], threads: int,
                 rng: np.random.Generator) -> dict[int, Any]:
    """LiteRT / ExecuTorch files take one photo (uint8 ``[1, size, size, 3]``) or window per call, as on a phone:
    a batch of ``b`` is ``b`` calls. The input size comes from ``model.onnx``'s metadata beside the file."""
    from birdvision.exporting.phone import example_input, session
    from birdvision.exporting.runtime import open_export

    onnx_file = Path(target).with_name(ENGINE_FILES["ort_fp32"])
    _, meta = open_export(onnx_file)
    example = example_input(dict(meta["preprocess"])).numpy()
    sess = session(PHONE_ENGINES[engine], Path(target), threads)
    name = sess.get_inputs()[0].name
    out = {}
    for b in batch_sizes:
        if example.dtype == np.uint8:
            x = rng.integers(0, 256, (b, *example.shape[1:]), dtype=np.uint8)
        else:
            x = rng.standard_normal((b, *example.shape[1:]), dtype=np.float32)
        out[b] = lambda x=x: sess.run(None, {name: x})
    return out
