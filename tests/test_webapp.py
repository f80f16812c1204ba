"""``python -m birdvision.serve``: what the server answers (and refuses), its start-up errors, its CLI end to end.

The page itself runs in a browser: tests/test_webapp_browser.py (``-m browser``).
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from birdvision.serve import main
from birdvision.webapp import STATIC_DIR
from birdvision.webapp.server import ORT_FILES, make_server, model_folder, serve_in_thread
from tests._bird_runs import make_run


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, demo_photos) -> Path:
    from birdvision.export import main as export_main

    run = make_run(tmp_path_factory.mktemp("run"), demo_photos)
    out = tmp_path_factory.mktemp("export")
    assert export_main([f"ckpt={run}", "format=onnx", f"output_dir={out}", "app_parity.enabled=false"]) == 0
    (out / "secret.txt").write_text("not for the browser")
    return out


@pytest.fixture(scope="module")
def ort_dir(tmp_path_factory) -> Path:
    """Stand-ins for onnxruntime-web's dist/ files (the server only checks they exist and serves them)."""
    d = tmp_path_factory.mktemp("ort")
    for name in ORT_FILES:
        (d / name).write_bytes(b"// " + name.encode())
    (d / "ort.all.min.mjs").write_text("// not one the page loads")
    return d


@pytest.fixture(scope="module")
def server(export_dir, ort_dir):
    srv = make_server(export_dir, ort_dir, port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)  # the path goes out verbatim (no normalising)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def test_serves_the_page_the_model_and_onnxruntime_web(server, export_dir):
    assert server.server_address[0] == "127.0.0.1"
    status, headers, body = get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'src="/app.js"' in body
    assert get(server, "/app.js")[2] == (STATIC_DIR / "app.js").read_bytes()
    status, headers, body = get(server, "/model/model.onnx")
    assert status == 200 and body == (export_dir / "model.onnx").read_bytes()
    assert int(headers["content-length"]) == len(body)
    assert get(server, "/model/model.json?v=2")[2] == (export_dir / "model.json").read_bytes()  # queries ignored
    status, headers, _ = get(server, "/ort/ort-wasm-simd-threaded.wasm")
    assert status == 200 and headers["content-type"] == "application/wasm"  # streaming compile needs it
    assert headers["cross-origin-opener-policy"] == "same-origin"  # isolated: threaded WebAssembly allowed
    assert headers["cross-origin-embedder-policy"] == "require-corp" and headers["cache-control"] == "no-store"
    status, headers, body = get(server, "/model/model.onnx", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == (export_dir / "model.onnx").stat().st_size


@pytest.mark.parametrize("path", [
    "/model/secret.txt", "/model/labels.txt", "/model/model.bare.onnx",  # in the export folder, not served
    "/ort/ort.all.min.mjs",  # in ort_dir, not one the page loads
    "/../pyproject.toml", "/model/../model/../../etc/passwd", "/model/%2e%2e/%2e%2e/etc/passwd",
    "/ort/..%2f..%2fetc%2fpasswd", "//etc/passwd", "/static/app.js", "/model/", "/model", "/index.html/..",
    "/%2fetc%2fpasswd", "/model/model.onnx/", "/tests/conftest.py", "/__init__.py",
])
def test_nothing_else_is_served(server, path):
    status, _, body = get(server, path)
    assert status == 404 and body == b"not found\n"


def test_other_methods_are_refused(server):
    assert get(server, "/model/model.onnx", "PUT")[0] == 501
    assert get(server, "/", "POST")[0] == 501


def test_start_up_errors_are_one_line_exit_2(export_dir, ort_dir, tmp_path, capsys):
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(export_dir / "model.onnx", half / "model.onnx")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(export_dir / "model.bare.onnx", bare / "model.onnx")
    shutil.copy(export_dir / "model.json", bare / "model.json")
    busy = make_server(export_dir, ort_dir, port=0)
    try:
        cases = [
            ([], "model=FOLDER (an export folder with model.onnx and model.json) is required"),
            ([f"model={tmp_path / 'nope'}"], "no such folder"),
            ([f"model={half}"], "the folder has no model.json"),
            ([f"model={tmp_path}"], "the folder has no model.onnx or model.json"),
            ([f"model={bare}"], "model.json does not match model.onnx"),  # another file under the card's name
            ([f"model={export_dir}", f"ort_dir={tmp_path}"], "onnxruntime-web not found"),
            ([f"model={export_dir}", f"ort_dir={ort_dir}", "port=70000"], "port=70000"),
            ([f"model={export_dir}", f"ort_dir={ort_dir}", f"port={busy.server_address[1]}"], "cannot listen"),
            ([f"model={export_dir}", "prot=1"], "port"),  # a typo names the nearest key
        ]
        for args, message in cases:
            assert main(args) == 2, args
            err = capsys.readouterr().err.strip()
            assert message in err and err.startswith("error: ") and len(err.splitlines()) == 1, (args, err)
    finally:
        busy.server_close()


def test_model_json_or_onnx_path_means_its_folder(export_dir):
    assert model_folder(export_dir / "model.json") == model_folder(export_dir / "model.onnx") == export_dir


def test_cli_serves_on_a_free_port_until_stopped(export_dir, ort_dir):
    proc = subprocess.Popen([sys.executable, "-m", "birdvision.serve", f"model={export_dir}", "port=0",
                             f"ort_dir={ort_dir}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {export_dir} at http://127.0.0.1:"), (line, proc.stderr.read())
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/model/model.json")
        assert conn.getresponse().read() == (export_dir / "model.json").read_bytes()
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
