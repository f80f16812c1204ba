"""The reference web app: a static page that runs ``model.onnx`` with onnxruntime-web, and its local server.

- ``static/``: the page (``index.html``, ``app.js``, ``style.css``; no build step). It reads ``model.json``,
  decodes a photo with the browser's decoder (EXIF orientation applied, transparency on white) and feeds the
  graph ``uint8 [1, H, W, 3]``, or decodes a recording, mixes it to mono, resamples it to the model's rate,
  high-passes it and cuts it into windows as ``birdvision.predict`` does; then applies ``model.json``'s
  decisions (thresholds, no-call class, abstention).
- ``server``: a stdlib HTTP server on 127.0.0.1 that serves exactly the page, the export folder's
  ``model.onnx`` and ``model.json``, and onnxruntime-web's files from an npm ``dist/`` folder
  (``python -m birdvision.serve``).
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["STATIC_DIR"]
