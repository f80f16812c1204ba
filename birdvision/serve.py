"""``python -m birdvision.serve model=EXPORT_FOLDER``: the reference web app on http://127.0.0.1:PORT/.

The page (``birdvision/webapp/static``) classifies a photo, or a recording for a call model, in the
browser with onnxruntime-web, from the folder's ``model.onnx`` and ``model.json``. onnxruntime-web is
not shipped with birdvision (its WebAssembly binary is 14 MB): ``npm install onnxruntime-web`` and run
from that folder, or pass ``ort_dir=`` (its ``dist/`` folder).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from birdvision.config import ConfigError, parse_cli
from birdvision.console import run_cli, setup_logging
from birdvision.webapp.server import DEFAULT_ORT_DIR, WebappError, make_server, url_of


@dataclass
class ServeConfig:
    """Everything ``python -m birdvision.serve`` reads."""

    model: str | None = None  # export folder holding model.onnx and model.json (or one of those two files)
    port: int = 8000  # port on 127.0.0.1; 0 = any free port (the URL is printed)
    ort_dir: str = DEFAULT_ORT_DIR  # onnxruntime-web's dist/ folder (npm install onnxruntime-web); relative to cwd


def main(argv: list[str] | None = None) -> int:
    """Entry point: serves until Ctrl-C (exit 130); 2 for a user error (folder, files, port, onnxruntime-web)."""

    def body() -> int:
        cfg = parse_cli(ServeConfig, argv, preset_key="preset", prog="birdvision.serve",
                        description="Serve the reference web app for an export folder on 127.0.0.1.")
        setup_logging()
        if not cfg.model:
            raise WebappError("model=FOLDER (an export folder with model.onnx and model.json) is required")
        server = make_server(cfg.model, cfg.ort_dir, cfg.port)
        print(f"serving {cfg.model} at {url_of(server)} (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return 0

    return run_cli(body, (ConfigError, WebappError))


if __name__ == "__main__":
    sys.exit(main())
