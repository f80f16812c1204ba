"""A local HTTP server for the reference web app: the page, one export folder, onnxruntime-web.

Every URL it answers is listed in a table built at start-up (:func:`routes`): the page's files,
``/model/model.onnx`` and ``/model/model.json``, and the few onnxruntime-web files the page loads.
Nothing is looked up on disk from the URL, so no request (``..``, encoded slashes, absolute
paths, symlinks in the export folder's neighbours) can reach another file: anything else is 404.

It binds 127.0.0.1 only (a page for the developer's own browser; put a real web server in front to
show it to a phone). The responses carry ``Cross-Origin-Opener-Policy`` / ``-Embedder-Policy`` so
the page is cross-origin isolated and onnxruntime-web may run its multi-threaded WebAssembly build.
"""

from __future__ import annotations

import logging
import shutil
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from birdvision.webapp import STATIC_DIR

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MODEL_FILES = ("model.onnx", "model.json")
# Input kinds the page can feed: photos at their own size, raw waveform windows (see static/app.js).
PAGE_INPUT_KINDS = ("uint8_nhwc_any", "waveform")
# The onnxruntime-web files the page loads: the WebAssembly-only ES module bundle, which imports its
# Emscripten glue and fetches the SIMD (+threads) binary from its own folder.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
DEFAULT_ORT_DIR = "node_modules/onnxruntime-web/dist"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".onnx": "application/octet-stream", ".wasm": "application/wasm",
                 ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


class WebappError(ValueError):
    """A user-facing problem starting the server (export folder, onnxruntime-web folder, port)."""


def model_folder(path: str | Path) -> Path:
    """The export folder to serve: ``path`` itself, or the folder of a ``model.onnx`` / ``model.json`` given
    instead. It must hold both files, and the page must be able to feed the model."""
    from birdvision.exporting.metadata import read_model_json
    from birdvision.exporting.runtime import open_export
    from birdvision.runs.checkpoint import CheckpointError

    p = Path(path).expanduser()
    if p.is_file() and p.name in MODEL_FILES:
        p = p.parent
    if not p.is_dir():
        raise WebappError(f"model={path}: no such folder (expected an export folder with model.onnx and model.json)")
    missing = [n for n in MODEL_FILES if not (p / n).is_file()]
    if missing:
        raise WebappError(f"model={path}: the folder has no {' or '.join(missing)} "
                          "(serve an export folder: python -m birdvision.export ... format=onnx)")
    try:
        card = read_model_json(p / "model.json")
        open_export(p / "model.onnx", threads=1)  # refuses a model.json that does not describe model.onnx
    except CheckpointError as e:
        raise WebappError(str(e)) from None
    if card.get("input_kind") not in PAGE_INPUT_KINDS:
        raise WebappError(f"{p / 'model.json'}: input_kind={card.get('input_kind')!r}; the page feeds "
                          f"{' or '.join(PAGE_INPUT_KINDS)} models (serve the folder's model.onnx, not a bare export)")
    return p


def ort_folder(path: str | Path | None) -> Path:
    """onnxruntime-web's ``dist/`` folder (``npm install onnxruntime-web``), checked for the files the page loads."""
    p = Path(path or DEFAULT_ORT_DIR).expanduser()
    missing = [n for n in ORT_FILES if not (p / n).is_file()]
    if missing:
        raise WebappError(f"onnxruntime-web not found: {p} lacks {', '.join(missing)} (run `npm install "
                          "onnxruntime-web` in this folder, or pass ort_dir=.../node_modules/onnxruntime-web/dist)")
    return p.resolve()


def routes(model_dir: Path, ort_dir: Path) -> dict[str, Path]:
    """URL path -> file: every URL the server answers."""
    table = {f"/{f.name}": f for f in sorted(STATIC_DIR.iterdir()) if f.is_file() and not f.name.startswith(".")}
    table["/"] = STATIC_DIR / "index.html"
    table.update({f"/model/{n}": model_dir / n for n in MODEL_FILES})
    table.update({f"/ort/{n}": ort_dir / n for n in ORT_FILES})
    return table


class _Handler(BaseHTTPRequestHandler):
    server_version = "birdvision-webapp"
    table: dict[str, Path] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._send(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(body=False)

    def _send(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        f = self.table.get(path)
        if f is None:
            self._status(HTTPStatus.NOT_FOUND, "not found")
            return
        try:
            fh = open(f, "rb")  # noqa: SIM115 - closed below, after the headers that need its size
        except OSError as e:  # the export folder changed under the server
            self._status(HTTPStatus.NOT_FOUND, f"{f.name}: {e.strerror}")
            return
        with fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPES.get(f.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(size))
            self._common_headers()
            self.end_headers()
            if body:
                try:
                    shutil.copyfileobj(fh, self.wfile)
                except (BrokenPipeError, ConnectionResetError):  # the browser went away
                    pass

    def _status(self, status: HTTPStatus, text: str) -> None:
        data = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a re-export is seen on reload
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


def make_server(model_dir: str | Path, ort_dir: str | Path | None = None, port: int = 8000) -> ThreadingHTTPServer:
    """A server (not yet serving) for the export folder ``model_dir`` on ``127.0.0.1:port`` (0: a free port;
    ``server.server_address[1]`` is the port bound). Raises :class:`WebappError` for a bad folder or port."""
    if not 0 <= int(port) <= 65535:
        raise WebappError(f"port={port}: expected 0 (any free port) to 65535")
    model = model_folder(model_dir)
    ort = ort_folder(ort_dir)
    handler = type("Handler", (_Handler,), {"table": routes(model, ort)})
    try:
        server = ThreadingHTTPServer((HOST, int(port)), handler)
    except OSError as e:
        raise WebappError(f"port={port}: cannot listen on {HOST}:{port} ({e.strerror or e})") from None
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Serve on a daemon thread (tests, notebooks); ``server.shutdown()`` stops it."""
    t = threading.Thread(target=server.serve_forever, name="birdvision-webapp", daemon=True)
    t.start()
    return t


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{server.server_address[1]}/"
