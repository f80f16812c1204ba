"""Hostile files and arguments: every CLI that reads a model or writes a result answers one `error:` line.

Checkpoints and exports from elsewhere (empty, truncated, random, foreign, impossible metadata),
output paths that cannot be written (a folder for a file, a file for a folder, read-only, a full
disk) and out-of-range options all end in exit 2, one line naming the path or key, no traceback,
and nothing written. Output paths and options are checked before the model is even read.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from birdvision import load
from birdvision.bench import main as bench_main
from birdvision.compare import main as compare_main
from birdvision.console import run_cli
from birdvision.evaluate import main as evaluate_main
from birdvision.export import main as export_main
from birdvision.predict import main as predict_main
from birdvision.runs.checkpoint import CheckpointError
from tests._bird_runs import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_photos) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), demo_photos)


@pytest.fixture(scope="module")
def onnx_file(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert export_main([f"ckpt={run_dir}", "format=onnx", f"output_dir={out}"]) == 0
    return out / "model.onnx"


@pytest.fixture(scope="module")
def photos(demo_photos) -> Path:
    return demo_photos / "test"


def one_error(capsys, *needles: str) -> str:
    """The single `error:` line on stderr (no traceback), containing every needle."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def files_under(p: Path) -> list[Path]:
    return sorted(x for x in p.rglob("*") if x.is_file()) if p.exists() else []


@pytest.fixture
def no_model_reads(monkeypatch):
    """Fail the test if anything reads a checkpoint or opens an ONNX session: checks must come first."""

    def refuse(*a, **k):
        raise AssertionError("the model was read before the arguments were checked")

    import onnxruntime

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


# ----------------------------------------------------------------------------- output paths


def test_predict_output_that_is_a_folder_is_refused_before_the_model_is_read(run_dir, photos, tmp_path, capsys,
                                                                             no_model_reads):
    folder = tmp_path / "out"
    folder.mkdir()
    assert predict_main([f"model={run_dir}", f"input={photos}", f"output={folder}"]) == 2
    one_error(capsys, f"output={folder}", "is a folder")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("cli", ["predict", "predict_raven", "export", "evaluate", "bench", "bench_export_dir",
                                 "compare"])
def test_path_under_a_file_is_refused_before_the_model_is_read(cli, run_dir, photos, tmp_path, capsys, no_model_reads):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder is needed")
    under = blocker / "sub"
    argv = {
        "predict": (predict_main, [f"model={run_dir}", f"input={photos}", f"output={under / 'p.csv'}"]),
        "predict_raven": (predict_main, [f"model={run_dir}", f"input={photos}", f"output={tmp_path / 'p.csv'}",
                                         f"raven={under / 'r.txt'}"]),
        "export": (export_main, [f"ckpt={run_dir}", f"output_dir={under}"]),
        "evaluate": (evaluate_main, [f"ckpt={run_dir}", f"output_dir={under}", "report=false"]),
        "bench": (bench_main, [f"model={run_dir}", f"output={under / 'b.json'}", "isolate=false"]),
        "bench_export_dir": (bench_main, [f"model={run_dir}", f"export_dir={under}", f"output={tmp_path / 'b.json'}",
                                          "isolate=false"]),
        "compare": (compare_main, [f"runs={run_dir}", f"output_dir={under}"]),
    }
    main, args = argv[cli]
    assert main(args) == 2
    one_error(capsys, str(blocker), "is a file, not a folder")
    assert files_under(tmp_path) == [blocker]


@pytest.mark.parametrize("cli", ["export", "evaluate", "compare"])
def test_output_dir_that_is_a_file_is_refused(cli, run_dir, tmp_path, capsys, no_model_reads):
    target = tmp_path / "results"
    target.write_text("keep me")
    main, args = {
        "export": (export_main, [f"ckpt={run_dir}", f"output_dir={target}"]),
        "evaluate": (evaluate_main, [f"ckpt={run_dir}", f"output_dir={target}", "report=false"]),
        "compare": (compare_main, [f"runs={run_dir}", f"output_dir={target}"]),
    }[cli]
    assert main(args) == 2
    one_error(capsys, f"output_dir={target}", "is a file, not a folder")
    assert target.read_text() == "keep me" and files_under(tmp_path) == [target]


def test_bench_output_that_is_a_folder(onnx_file, tmp_path, capsys, no_model_reads):
    assert bench_main([f"model={onnx_file}", f"output={tmp_path}", "isolate=false"]) == 2
    one_error(capsys, f"output={tmp_path}", "is a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(run_dir, photos, tmp_path, capsys, no_model_reads):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert predict_main([f"model={run_dir}", f"input={photos}", f"output={ro / 'p.csv'}"]) == 2
        one_error(capsys, f"output={ro / 'p.csv'}", "permission denied")
        assert export_main([f"ckpt={run_dir}", f"output_dir={ro / 'export'}"]) == 2
        one_error(capsys, f"output_dir={ro / 'export'}", "permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_full_disk_seen_before_the_work(run_dir, photos, tmp_path, capsys, monkeypatch, no_model_reads):
    """A file system that reports no free space is refused up front, naming the path."""
    real = os.statvfs

    def full(path):
        st = real(path)
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, st.f_files, st.f_ffree, st.f_favail,
                                  st.f_flag, st.f_namemax))

    monkeypatch.setattr(os, "statvfs", full)
    out = tmp_path / "p.csv"
    assert predict_main([f"model={run_dir}", f"input={photos}", f"output={out}"]) == 2
    one_error(capsys, f"output={out}", "the disk is full")
    assert files_under(tmp_path) == []


def test_disk_filling_up_during_the_write_names_the_table_and_leaves_nothing(run_dir, photos, tmp_path, capsys,
                                                                             monkeypatch):
    """ENOSPC from the write itself (no file name attached, as write(2) reports it)."""
    real = Path.write_text

    def enospc(self, *a, **k):
        if self.parent == tmp_path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", enospc)
    out = tmp_path / "p.csv"
    assert predict_main([f"model={run_dir}", f"input={photos}", f"output={out}"]) == 2
    one_error(capsys, f"cannot write {out}", "the disk is full")
    # no table, no half-written temporary file; only the resume journal, whole, so a re-run rebuilds the table
    journal = tmp_path / "p.journal"
    assert files_under(tmp_path) == [journal]
    assert all(json.loads(line) for line in journal.read_text().splitlines())


def test_run_cli_turns_a_stray_write_error_into_one_line(capsys):
    def body():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/model.onnx")

    assert run_cli(body, (ValueError,)) == 2
    one_error(capsys, "/data/out/model.onnx", "the disk is full")

    def other():
        raise OSError(errno.ECONNRESET, "reset")  # not a write failure: a bug to see in full

    with pytest.raises(OSError):
        run_cli(other, (ValueError,))


def test_predict_never_overwrites_its_model_or_an_input(run_dir, onnx_file, photos, tmp_path, capsys):
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    before = ckpt.read_bytes()
    assert predict_main([f"model={run_dir}", f"input={photos}", f"output={ckpt}"]) == 2
    one_error(capsys, f"output={ckpt}", "is the model file")
    onnx_before = onnx_file.read_bytes()
    assert predict_main([f"model={onnx_file}", f"input={photos}", f"output={onnx_file}"]) == 2
    one_error(capsys, "is the model file")
    assert ckpt.read_bytes() == before and onnx_file.read_bytes() == onnx_before

    inputs = tmp_path / "in"
    shutil.copytree(photos, inputs)
    victim = sorted(inputs.rglob("*.jpg"))[0]
    data = victim.read_bytes()
    assert predict_main([f"model={run_dir}", f"input={inputs}", f"output={victim}"]) == 2
    one_error(capsys, str(victim), "one of the input files")
    assert victim.read_bytes() == data

    table = tmp_path / "p.log"  # the run log would land on the table itself
    assert predict_main([f"model={run_dir}", f"input={photos}", f"output={table}"]) == 2
    one_error(capsys, f"output={table}", "run log")
    same = tmp_path / "same.csv"
    assert predict_main([f"model={run_dir}", f"input={photos}", f"output={same}", f"raven={same}"]) == 2
    one_error(capsys, f"raven={same}", "also output")
    assert not table.exists() and not same.exists()


def test_evaluate_checks_it_can_store_the_temperature_before_the_work(run_dir, tmp_path, capsys, monkeypatch):
    """calibrate=true rewrites the checkpoint: an unwritable checkpoint folder is found before evaluating."""
    import birdvision.runs.artifacts as artifacts

    ck_dir = (run_dir / "checkpoints").resolve()
    real = artifacts._probe_folder

    def probe(folder, what):
        if Path(folder).resolve() == ck_dir:
            raise artifacts.OutputError(f"{what} cannot be written: the file system is read-only in {folder}")
        return real(folder, what)

    monkeypatch.setattr(artifacts, "_probe_folder", probe)
    out = tmp_path / "ev"
    assert evaluate_main([f"ckpt={run_dir}", f"output_dir={out}", "report=false"]) == 2
    one_error(capsys, str(ck_dir), "read-only", "calibrate=false")
    assert not out.exists()


# ----------------------------------------------------------------------------- checkpoints from elsewhere


class _Boom:
    """Unpickling this would run code (touch a file); weights-only loading must refuse it."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _edit(key_path: str, value):
    def f(ck):
        d = ck["hyper_parameters"]
        *parents, leaf = key_path.split(".")
        for k in parents:
            d = d[k]
        d[leaf] = value
    return f


def _drop_first_net_tensor(ck):
    del ck["state_dict"][next(k for k in ck["state_dict"] if k.startswith("net."))]


def _shrink_first_conv(ck):
    k = next(k for k, v in ck["state_dict"].items() if k.startswith("net.") and v.ndim == 4)
    ck["state_dict"][k] = torch.zeros(1, 1, 1, 1)


AUDIO_SPEC = {"kind": "audio", "sample_rate": 10**9, "clip_seconds": 5.0,
              "mel": {"sample_rate": 10**9, "n_fft": 1024, "hop_length": 320, "n_mels": 64, "f_min_hz": 50.0,
                      "f_max_hz": 14000.0}}

# name -> (how to make it from the good checkpoint, what the one line must say)
CKPT_CASES = {
    "empty": ("bytes", b"", "is empty (0 bytes)"),
    "truncated": ("truncate", None, "not a readable PyTorch checkpoint"),
    "random_bytes": ("bytes", np.random.default_rng(0).bytes(4096), "not a readable PyTorch checkpoint"),
    "pickled_code": ("code", None, "not a readable PyTorch checkpoint"),
    "torchvision_state_dict": ("torchvision", None, "a bare state_dict"),
    "lightning_other_model": ("obj", {"state_dict": {"layer.weight": torch.zeros(2, 2)}, "epoch": 3,
                                      "hyper_parameters": {"lr": 0.1, "hidden": 64}}, "checkpoint of another model"),
    "missing_keys": ("edit", _drop_first_net_tensor, "missing 1 tensor(s) (net."),
    "wrong_shapes": ("edit", _shrink_first_conv, "has shape (1, 1, 1, 1), the model needs"),
    "more_classes_than_outputs": ("edit", _edit("classes", ["a", "b", "c", "d", "e"]), "class list has 5 names"),
    "classes_not_a_list": ("edit", _edit("classes", "abc"), "classes is a str"),
    "duplicate_classes": ("edit", _edit("classes", ["a", "b", "a"]), "lists 'a' twice"),
    "image_size_huge": ("edit", _edit("preprocess.size", 10**9), "preprocess.size=1000000000"),
    "image_size_negative": ("edit", _edit("preprocess.size", -4), "preprocess.size=-4"),
    "std_zero": ("edit", _edit("preprocess.std", [0.0, 0.0, 0.0]), "preprocess.std"),
    "temperature_nan": ("edit", _edit("temperature", float("nan")), "temperature=nan"),
    "unknown_kind": ("edit", _edit("preprocess.kind", "video"), "preprocess.kind='video'"),
    "audio_rate_huge": ("edit", _edit("preprocess", AUDIO_SPEC), "preprocess.sample_rate=1000000000"),
    "unknown_backbone": ("edit", _edit("backbone", "resnet9000"), "unknown backbone 'resnet9000'"),
}


def _hostile_run(name: str, good_run: Path, root: Path) -> Path:
    """A run folder (manifest + checkpoints/best.ckpt) whose checkpoint is the hostile case ``name``."""
    how, arg, _ = CKPT_CASES[name]
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(good_run / "manifest.csv", run / "manifest.csv")
    good = good_run / "checkpoints" / "best.ckpt"
    dest = run / "checkpoints" / "best.ckpt"
    if how == "bytes":
        dest.write_bytes(arg)
    elif how == "truncate":
        raw = good.read_bytes()
        dest.write_bytes(raw[: len(raw) // 2])
    elif how == "code":
        boom = _Boom()
        boom.marker = root / f"{name}.unpickled"
        torch.save({"hyper_parameters": boom, "state_dict": {}}, dest)
    elif how == "torchvision":
        from torchvision.models import squeezenet1_1

        torch.save(squeezenet1_1(weights=None).state_dict(), dest)
    elif how == "obj":
        torch.save(arg, dest)
    else:
        ck = copy.deepcopy(torch.load(good, weights_only=True))
        arg(ck)
        torch.save(ck, dest)
    return run


@pytest.mark.parametrize("name", list(CKPT_CASES))
def test_malformed_checkpoint_is_one_line_at_every_entry_point(name, run_dir, photos, tmp_path, capsys):
    run = _hostile_run(name, run_dir, tmp_path / "runs")
    ckpt = run / "checkpoints" / "best.ckpt"
    needle = CKPT_CASES[name][2]
    out = tmp_path / "out"
    calls = {
        "predict": (predict_main, [f"model={run}", f"input={photos}", f"output={out / 'p.csv'}"]),
        "evaluate": (evaluate_main, [f"ckpt={run}", f"output_dir={out / 'eval'}"]),
        "export": (export_main, [f"ckpt={ckpt}", f"output_dir={out / 'export'}"]),
        "bench": (bench_main, [f"model={run}", f"export_dir={out / 'bench'}", f"output={out / 'b.json'}",
                               "isolate=false", "iters=1", "rounds=1"]),
        "compare": (compare_main, [f"runs={run}", f"output_dir={out / 'cmp'}", "iters=1", "min_seconds=0"]),
    }
    before = ckpt.read_bytes()
    for cli, (main, args) in calls.items():
        assert main(args) == 2, cli
        one_error(capsys, str(ckpt), needle)
    with pytest.raises(CheckpointError, match=None) as e:
        load(run)
    assert str(ckpt) in str(e.value) and needle in str(e.value)
    assert files_under(out) == [] and ckpt.read_bytes() == before  # nothing written, checkpoint untouched
    assert not (tmp_path / "runs" / f"{name}.unpickled").exists()  # no pickled code ever ran


# ----------------------------------------------------------------------------- exported models from elsewhere


def _with_metadata(src: Path, dest: Path, **changes: str | None) -> Path:
    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    del m.metadata_props[:]
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(dest))
    return dest


def _rank2_graph(src: Path, dest: Path) -> Path:
    """A valid ONNX graph (float [B, 3] in and out) carrying a photo model's birdvision metadata."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for p in onnx.load(str(src)).metadata_props:
        e = m.metadata_props.add()
        e.key, e.value = p.key, p.value
    onnx.save(m, str(dest))
    return dest


def _pre_with(src: Path, **changes) -> str:
    pre = json.loads({p.key: p.value for p in onnx.load(str(src)).metadata_props}["preprocess"])
    pre.update(changes)
    return json.dumps(pre)


ONNX_CASES = {
    "empty.onnx": (lambda s, d: d.write_bytes(b""), "is empty (0 bytes)"),
    "text.onnx": (lambda s, d: d.write_text("name,species\n"), "is not a loadable ONNX model"),
    "truncated.onnx": (lambda s, d: d.write_bytes(s.read_bytes()[: s.stat().st_size // 2]), "is not a loadable ONNX model"),
    "random.onnx": (lambda s, d: d.write_bytes(np.random.default_rng(1).bytes(4096)), "is not a loadable ONNX model"),
    "garbage.ort": (lambda s, d: d.write_bytes(b"ORTM" + bytes(100)), "is not a loadable ONNX model"),
    "foreign.onnx": (lambda s, d: _with_metadata(s, d, classes=None, preprocess=None, input_kind=None),
                     "is not a birdvision export"),
    "bad_json.onnx": (lambda s, d: _with_metadata(s, d, classes="[not json"), "metadata 'classes' is not valid JSON"),
    "classes_vs_width.onnx": (lambda s, d: _with_metadata(s, d, classes=json.dumps(list("abcde"))),
                              "the metadata lists 5 classes"),
    "classes_not_list.onnx": (lambda s, d: _with_metadata(s, d, classes=json.dumps({"a": 1})), "classes is a dict"),
    "size_huge.onnx": (lambda s, d: _with_metadata(s, d, preprocess=_pre_with(s, size=10**9)),
                       "preprocess.size=1000000000"),
    # a graph that takes photos of any size has no size to contradict; the bare graph's fixed size does
    "size_wrong.onnx": (lambda s, d: _with_metadata(s.parent / "model.bare.onnx", d, preprocess=_pre_with(s, size=64)),
                        "input_kind='float_nchw' means tensor(float) [batch, ?, 64, 64]"),
    "audio_rate_huge.onnx": (lambda s, d: _with_metadata(s, d, preprocess=json.dumps(AUDIO_SPEC), input_kind="waveform"),
                             "preprocess.sample_rate=1000000000"),
    "temperature_text.onnx": (lambda s, d: _with_metadata(s, d, temperature="hot"), "'temperature'='hot'"),
    "unknown_input_kind.onnx": (lambda s, d: _with_metadata(s, d, input_kind="jpeg"), "input_kind='jpeg'"),
    "dtype_mismatch.onnx": (lambda s, d: _with_metadata(s, d, input_kind="float_nchw"),
                            "is tensor(uint8) ['batch', 'height', 'width', 3], but input_kind='float_nchw'"),
    "rank2.onnx": (_rank2_graph, "is tensor(float) ['b', 3], but input_kind='uint8_nhwc_any'"),
}


@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_malformed_export_is_one_line_at_every_entry_point(name, onnx_file, photos, tmp_path, capsys):
    make, needle = ONNX_CASES[name]
    bad = tmp_path / name
    make(onnx_file, bad)
    out = tmp_path / "out"
    assert predict_main([f"model={bad}", f"input={photos}", f"output={out / 'p.csv'}"]) == 2
    one_error(capsys, str(bad), needle)
    assert bench_main([f"model={bad}", f"output={out / 'b.json'}", "isolate=false", "iters=1", "rounds=1"]) == 2
    one_error(capsys, str(bad), needle)
    with pytest.raises(CheckpointError) as e:
        load(bad)
    assert str(bad) in str(e.value) and needle in str(e.value)
    assert files_under(out) == []


# ----------------------------------------------------------------------------- damaged run folders


@pytest.mark.parametrize("damage, needle", [
    (b"\xff\xfe\x00\x81 not text", "missing column"),
    ("half", "is not the manifest best.ckpt was trained on"),
    ("swap_splits", "is not the manifest best.ckpt was trained on"),
    (b"", "missing column"),
])
def test_evaluate_refuses_a_damaged_run_manifest(damage, needle, run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    manifest = run / "manifest.csv"
    text = manifest.read_text()
    if damage == "half":
        manifest.write_text(text[: len(text) // 2])
    elif damage == "swap_splits":  # training photos moved into the test split: the metrics would lie
        manifest.write_text(text.replace(",train,", ",tmp,").replace(",test,", ",train,").replace(",tmp,", ",test,"))
    else:
        manifest.write_bytes(damage)
    before = (run / "checkpoints" / "best.ckpt").read_bytes()
    assert evaluate_main([f"ckpt={run}"]) == 2
    one_error(capsys, str(manifest), needle)
    assert not (run / "eval").exists() and (run / "checkpoints" / "best.ckpt").read_bytes() == before


def test_damaged_records_beside_the_checkpoint(run_dir, tmp_path, capsys):
    """evaluate needs neither summary.json nor classes.json (the checkpoint carries the classes): it runs, and the
    report says the summary is damaged; compare reads accuracies from summary.json, so it refuses to guess."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "summary.json").write_text('{"val/acc_best": 0.9')
    (run / "classes.json").write_bytes(b"\x00\xff")
    assert evaluate_main([f"ckpt={run}"]) == 0
    assert "summary.json is damaged" in (run / "report.html").read_text()
    capsys.readouterr()
    assert compare_main([f"runs={run}", f"output_dir={tmp_path / 'cmp'}", "iters=1", "min_seconds=0"]) == 2
    one_error(capsys, str(run / "summary.json"), "is damaged")
    assert bench_main([f"compare=[{run}]", f"output={tmp_path / 'b.json'}", "isolate=false"]) == 2
    one_error(capsys, str(run / "summary.json"), "is damaged")
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "b.json").exists()


def test_bench_exports_again_over_a_damaged_earlier_export(run_dir, onnx_file, tmp_path):
    exp = tmp_path / "export"
    shutil.copytree(onnx_file.parent, exp)
    info = json.loads((exp / "export.json").read_text())
    info["checkpoint"] = str(run_dir / "checkpoints" / "best.ckpt")  # "this checkpoint's export" ...
    (exp / "export.json").write_text(json.dumps(info))
    (exp / "model.onnx").write_bytes(b"\x00" * 64)  # ... but its model.onnx was damaged since
    assert bench_main([f"model={run_dir}", f"export_dir={exp}", "engines=ort_fp32", "isolate=false", "iters=1",
                       "rounds=1", "batch=2", f"output={tmp_path / 'b.json'}"]) == 0
    assert load(exp / "model.onnx").engine == "onnxruntime"
    assert json.loads((tmp_path / "b.json").read_text())["engines"]["ort_fp32"]["median_ms"] > 0


# ----------------------------------------------------------------------------- options and paths


SWEEP = [
    # (cli, arguments, what the line must name); RUN/INPUT/OUT/EMPTY/BIN are filled in
    ("predict", ["batch_size=-1"], "batch_size=-1"),
    ("predict", ["batch_size=1000000000"], "batch_size=1000000000"),
    ("predict", ["top_k=0"], "top_k=0"),
    ("predict", ["min_confidence=1.5"], "min_confidence=1.5"),
    ("predict", ["min_confidence=.nan"], "min_confidence=nan"),
    ("predict", ["threads=-1"], "threads=-1"),
    ("predict", ["block_seconds=0"], "block_seconds=0"),
    ("predict", ["overlap_seconds=-1"], "overlap_seconds=-1"),
    ("predict", ["model="], "model= is required"),
    ("predict", ["model=/no/such/model.ckpt"], "/no/such/model.ckpt does not exist"),
    ("predict", ["model=/no/such/model.onnx"], "/no/such/model.onnx does not exist"),
    ("predict", ["input=/no/such/photos"], "/no/such/photos does not exist"),
    ("predict", ["input=EMPTY"], "no candidate photos under EMPTY"),
    ("export", ["format=unknown"], "unknown format unknown"),
    ("export", ["format=,"], "unknown format"),
    ("export", ["opset=3"], "opset=3"),
    ("export", ["parity.n=0"], "parity.n=0"),
    ("export", ["parity.batch_size=0"], "parity.batch_size=0"),
    ("export", ["parity.max_acc_drop=5"], "parity.max_acc_drop=5"),
    ("export", ["parity.fp32_max_abs_diff=-1"], "parity.fp32_max_abs_diff=-1"),
    ("export", ["parity.split=nope"], "parity.split='nope'"),
    ("export", ["calibration.batch_size=0", "format=int8"], "calibration.batch_size=0"),
    ("export", ["tensorrt.max_batch=0"], "tensorrt.max_batch=0"),
    ("export", ["threads=-1"], "threads=-1"),
    ("export", ["ckpt="], "ckpt=PATH is required"),
    ("export", ["ckpt=/no/such.ckpt"], "/no/such.ckpt does not exist"),
    ("export", ["parity.data=/no/such/folder"], "/no/such/folder does not exist"),
    ("export", ["parity.data=EMPTY"], "parity set is empty"),
    ("evaluate", ["batch_size=0"], "batch_size=0"),
    ("evaluate", ["num_workers=-1"], "num_workers=-1"),
    ("evaluate", ["top_losses=-1"], "top_losses=-1"),
    ("evaluate", ["device=foo"], "device='foo'"),
    ("evaluate", ["split=nope"], "split='nope'"),
    ("evaluate", ["data=/no/such/data"], "data=/no/such/data"),
    ("evaluate", ["data=EMPTY"], "EMPTY"),
    ("evaluate", ["class_map=/no/such.json"], "class_map=/no/such.json"),
    ("evaluate", ["ckpt=EMPTY"], "EMPTY has no checkpoints"),
    ("evaluate", ["class_map=BIN"], "class_map=BIN: not a text file"),
    ("evaluate", ["data=BIN"], "BIN: missing column"),
    ("export", ["parity.data=BIN"], "BIN: missing column"),
    ("bench", ["batch=0"], "batch=0"),
    ("bench", ["iters=0"], "iters=0"),
    ("bench", ["rounds=0"], "rounds=0"),
    ("bench", ["threads=0"], "threads=0"),
    ("bench", ["engines=warp_drive"], "warp_drive"),
    ("bench", ["model=/no/such.onnx"], "/no/such.onnx does not exist"),
    ("bench", ["model=", "compare=[/no/such/run]"], "/no/such/run does not exist"),
    ("compare", ["iters=0"], "iters=0"),
    ("compare", ["min_seconds=-1"], "min_seconds=-1"),
    ("compare", ["threads=-1"], "threads=-1"),
    ("compare", ["device=foo"], "device='foo'"),
    ("compare", ["runs="], "runs=DIR"),
    ("compare", ["runs=/no/such/runs"], "/no/such/runs is not a folder"),
    ("compare", ["runs=EMPTY"], "no run folder with checkpoints under EMPTY"),
]

_BASE = {
    "predict": (predict_main, ["model=RUN", "input=INPUT", "output=OUT/p.csv"]),
    "export": (export_main, ["ckpt=RUN", "output_dir=OUT/export"]),
    "evaluate": (evaluate_main, ["ckpt=RUN", "output_dir=OUT/eval", "report=false"]),
    "bench": (bench_main, ["model=RUN", "export_dir=OUT/bench", "output=OUT/b.json", "isolate=false"]),
    "compare": (compare_main, ["runs=RUN", "output_dir=OUT/cmp"]),
}


@pytest.mark.parametrize("cli, args, needle", SWEEP, ids=[f"{c}-{' '.join(a)}" for c, a, _ in SWEEP])
def test_hostile_arguments_are_one_line(cli, args, needle, run_dir, photos, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81 binary")
    out = tmp_path / "out"
    main, base = _BASE[cli]
    given = {a.split("=", 1)[0] for a in args}
    argv = [a for a in base if a.split("=", 1)[0] not in given] + args
    subst = {"RUN": str(run_dir), "INPUT": str(photos), "OUT": str(out), "EMPTY": str(empty), "BIN": str(binary)}
    for k, v in subst.items():
        argv = [a.replace(k, v) for a in argv]
        needle = needle.replace(k, v)
    assert main(argv) == 2
    one_error(capsys, needle)
    assert files_under(out) == []


def test_option_ranges_are_checked_before_the_model_is_read(run_dir, photos, tmp_path, capsys, no_model_reads):
    out = tmp_path / "out"
    for main, args, needle in (
        (predict_main, [f"model={run_dir}", f"input={photos}", f"output={out / 'p.csv'}", "batch_size=0"], "batch_size"),
        (export_main, [f"ckpt={run_dir}", f"output_dir={out}", "opset=99"], "opset=99"),
        (evaluate_main, [f"ckpt={run_dir}", f"output_dir={out}", "batch_size=-1"], "batch_size=-1"),
        (bench_main, [f"model={run_dir}", f"output={out / 'b.json'}", "rounds=0"], "rounds=0"),
        (compare_main, [f"runs={run_dir}", f"output_dir={out}", "iters=0"], "iters=0"),
    ):
        assert main(args) == 2
        one_error(capsys, needle)
    assert not out.exists()
