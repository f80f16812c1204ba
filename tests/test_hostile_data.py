"""Hostile data (issue 11): nothing lost, nothing run, one clear line.

Each case is replayed on generated photo trees in ``tmp_path`` through the CLIs' ``main``:
a refusal is exit status 2 with exactly one ``error:`` line and no traceback, and leaves
the data folder (and the audit's output folder) untouched; a bad single entry is left
out with its path and reason, and everything else still runs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvision import audit, fit, predict
from birdvision.checks.findings import read_findings
from birdvision.data.datamodule import BirdDataModule
from birdvision.data.files import file_problem, list_folder, outside_root, walk_files
from birdvision.data.manifest import DataSourceError, Sample, label_problem, read_manifest, write_manifest
from birdvision.data.sources import discover
from birdvision.reports.metrics import csv_text, markdown_table
from birdvision.runs.artifacts import for_people, from_spreadsheet, spreadsheet_safe, write_text
from tests._bird_runs import make_run
from tests.conftest import fit_args

SPECIES = ("ALPHA FINCH", "BETA WREN")
linux_names = pytest.mark.skipif(sys.platform != "linux", reason="file names as arbitrary bytes are a Linux matter")


# ----------------------------------------------------------------------------- helpers


def photo(path: Path, seed: int) -> Path:
    """A tiny distinct JPEG."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def photo_tree(root: Path, species=SPECIES, splits=(("train", 4), ("valid", 2), ("test", 2))) -> Path:
    seed = 0
    for split, n in splits:
        for sp in species:
            for i in range(n):
                photo(root / split / sp / f"{i}.jpg", seed)
                seed += 1
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` with its size and mtime (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def one_error_line(capsys, rc: int, *needles: str) -> str:
    """Assert the one-line user error and return it."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def audit_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"output_dir={out}", "scan.progress=false", "scan.workers=1", *extra]


def quick_fit(root: Path | None, out: Path, *extra: str) -> list[str]:
    args = fit_args(root or Path("unused"), out, "trainer.max_epochs=1", "evaluate_after_fit=false", *extra)
    return args if root is not None else [a for a in args if a != "data.root=unused"]


def summary_of(out: Path) -> dict:
    (path,) = out.glob("*/*/summary.json")
    return json.loads(path.read_text())


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Turn a blocked read (a FIFO opened as a photo) into a test failure instead of a stuck suite."""

    def boom(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def left_out(caplog) -> dict[str, str]:
    """``path -> reason`` of fit's "left out" warnings."""
    return {r.args[0]: r.args[1] for r in caplog.records if r.msg == "left out %s: %s"}


# ----------------------------------------------------------------------------- 6: val/ and valid/


@pytest.mark.parametrize("pair", [("val", "valid"), ("valid", "validation"), ("train", "Train")])
def test_two_folders_for_one_split_are_refused_naming_both(tmp_path, capsys, pair):
    root = photo_tree(tmp_path / "birds")
    for name in pair:
        if not (root / name).exists():
            photo(root / name / SPECIES[0] / "extra.jpg", 99)
    before = snapshot(root)
    names = sorted(f"{p}/" for p in pair)

    rc = audit.main(audit_args(root, tmp_path / "audit"))
    one_error_line(capsys, rc, *names, "merge them or remove one")
    assert not (tmp_path / "audit").exists()

    rc = fit.main(fit_args(root, tmp_path / "runs"))
    one_error_line(capsys, rc, *names)
    assert not list((tmp_path / "runs").glob("*/*/manifest.csv"))
    assert snapshot(root) == before


# ----------------------------------------------------------------------------- 7: no test split


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_no_test_split_means_no_test_result(tmp_path, caplog, how):
    root = photo_tree(tmp_path / "birds", splits=(("train", 4), ("valid", 2)))
    if how == "empty":
        for sp in SPECIES:
            (root / "test" / sp).mkdir(parents=True)
    assert fit.main(fit_args(root, tmp_path / "runs", "trainer.max_epochs=1")) == 0
    s = summary_of(tmp_path / "runs")
    assert s["samples"]["test"] == 0
    assert not [k for k in s if k.startswith("test/")], s
    assert s["test"] == "no test split"
    assert s["evaluated_split"] == "valid" and "val/acc" in s
    assert any("no test split" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_datamodule_never_serves_valid_as_test():
    valid = [1, 2, 3]
    dm = BirdDataModule({"train": [0], "valid": valid, "test": []}, batch_size=2, num_workers=0)
    assert dm.test_dataloader().dataset == []


# ----------------------------------------------------------------------------- 8: class names


BAD_NAMES = ["EVIL\nWREN", "TAB\tWREN", "ZERO\u200bWIDTH", "LINE\u2028SEP", " PADDED", "BELL\x07"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_label_problem_names_the_trouble(name):
    assert label_problem(name)
    assert label_problem("ÇA VA WREN") is None and label_problem("-ish") is None


@pytest.mark.parametrize("name", ["EVIL\nWREN", "ZERO\u200bWIDTH"])
def test_class_folder_with_a_control_character_is_refused_naming_it(tmp_path, capsys, name):
    root = photo_tree(tmp_path / "birds", species=(SPECIES[0], name))
    before = snapshot(root)
    bad = repr(str(root / "test" / name))  # the folder, escaped so the error stays one line

    rc = fit.main(fit_args(root, tmp_path / "runs"))
    one_error_line(capsys, rc, f"class folder {bad}", "rename it")
    rc = audit.main(audit_args(root, tmp_path / "audit"))
    one_error_line(capsys, rc, f"species folder {bad}", "rename it")
    assert not (tmp_path / "audit").exists()
    assert snapshot(root) == before


def test_birds_csv_and_manifest_labels_are_checked(tmp_path, capsys):
    root = photo_tree(tmp_path / "birds")
    rows = [["class id", "filepaths", "labels", "data set", "scientific name"]]
    for p in sorted(root.rglob("*.jpg")):
        rel = p.relative_to(root)
        label = "EVIL\tWREN" if rel.parts[1] == SPECIES[1] else rel.parts[1]
        rows.append(["0", rel.as_posix(), label, rel.parts[0], "x"])
    with open(root / "birds.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    rc = audit.main(audit_args(root, tmp_path / "audit", "check=birds525"))
    one_error_line(capsys, rc, "birds.csv:", "'EVIL\\tWREN'", "control character")
    rc = fit.main(fit_args(root, tmp_path / "runs"))
    one_error_line(capsys, rc, "birds.csv:", "'EVIL\\tWREN'")

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,split\n{root / 'train' / SPECIES[0] / '0.jpg'},\"A\nB\",train\n")
    rc = fit.main(quick_fit(None, tmp_path / "runs", f"data.manifest={manifest}", f"data.root={root}"))
    one_error_line(capsys, rc, "m.csv:2", "'A\\nB'")


# ----------------------------------------------------------------------------- 9: names that are not UTF-8


@linux_names
def test_undecodable_file_names_survive_audit_fit_and_predict(tmp_path):
    root = photo_tree(tmp_path / "birds")
    bad = []
    for split in ("train", "valid", "test"):
        src = root / split / SPECIES[0] / "0.jpg"
        dst = os.path.join(os.fsencode(src.parent), b"caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8
        os.rename(src, dst)
        bad.append(os.fsdecode(dst))
    empty = os.path.join(os.fsencode(root / "train" / SPECIES[1]), b"bad\xff.jpg")
    open(empty, "wb").close()  # an unreadable one: the report names it
    n_files = len(list(root.rglob("*.jpg")))

    out = tmp_path / "audit"
    assert audit.main(audit_args(root, out)) == 0
    samples = read_manifest(out / "manifest.csv")
    assert len(samples) == n_files
    assert set(bad) <= {s.path for s in samples} and all(Path(s.path).is_file() for s in samples)
    assert b"caf\xe9-\xff.jpg" in (out / "manifest.csv").read_bytes()  # the exact bytes on disk
    report = (out / "report.html").read_bytes().decode("utf-8")  # valid UTF-8 for browsers
    assert "bad\ufffd.jpg" in report
    summary = json.loads((out / "summary.json").read_text())
    assert os.fsdecode(empty) in {r["path"] for r in summary["removed"]}  # JSON escapes read back exactly
    assert os.fsdecode(empty) in {r["path"] for r in read_findings(out / "findings.csv")}

    runs = tmp_path / "runs"
    assert fit.main(quick_fit(None, runs, f"data.manifest={out / 'manifest.csv'}")) == 0
    (run_manifest,) = runs.glob("*/*/manifest.csv")
    assert set(bad) <= {s.path for s in read_manifest(run_manifest)}

    table = tmp_path / "pred.csv"
    assert predict.main([f"model={run_manifest.parent}", f"input={root / 'valid'}", f"output={table}", "top_k=1"]) == 0
    with open(table, newline="", encoding="utf-8", errors="surrogateescape") as f:
        files = [r["file"] for r in csv.DictReader(f)]
    assert len(files) == len(list((root / "valid").rglob("*.jpg")))  # one row per photo: none lost
    assert bad[1] in files and all(Path(p).is_file() for p in files)


def test_text_written_with_file_name_escapes_reads_back(tmp_path):
    name = os.fsdecode(b"/data/caf\xe9.jpg")
    m = write_manifest(tmp_path / "m.csv", [Sample(name, "WREN", "train")])
    assert read_manifest(m)[0].path == name
    assert for_people(name) == "/data/caf\ufffd.jpg"
    write_text(tmp_path / "t.txt", name)
    assert (tmp_path / "t.txt").read_bytes() == b"/data/caf\xe9.jpg"


# ----------------------------------------------------------------------------- 10: symlink loops


def plant_loops(folder: Path) -> dict[str, Path]:
    links = {"a": folder / "a", "b": folder / "b", "self": folder / "self", "up": folder / "up", "top": folder / "top"}
    os.symlink("b", links["a"])
    os.symlink("a", links["b"])
    os.symlink("self", links["self"])
    os.symlink("..", links["up"], target_is_directory=True)
    os.symlink("/", links["top"], target_is_directory=True)
    return links


def test_walk_skips_every_kind_of_loop_with_a_reason(tmp_path):
    top = tmp_path / "top"
    photo(top / "A" / "1.jpg", 1)
    photo(top / "B" / "2.jpg", 2)
    os.symlink("../B", top / "A" / "to_b", target_is_directory=True)  # not a loop: B's photo a second time
    os.symlink("../A", top / "B" / "to_a", target_is_directory=True)  # ... a loop when reached from A
    links = plant_loops(top / "A")
    os.symlink("missing", top / "A" / "broken")
    os.mkfifo(top / "A" / "pipe.jpg")
    walk = walk_files(top)
    why = dict(walk.skipped)
    assert [p.name for p in walk.files] == ["1.jpg", "2.jpg", "2.jpg", "1.jpg"]  # copies, no endless walk
    assert "loop" in why[str(links["a"])] and "loop" in why[str(links["b"])] and "loop" in why[str(links["self"])]
    assert "already in" in why[str(links["up"])] and "already in" in why[str(links["top"])]
    assert "already in" in why[str(top / "A" / "to_b" / "to_a")]
    assert "broken symlink" in why[str(top / "A" / "broken")]
    assert "FIFO" in why[str(top / "A" / "pipe.jpg")]
    assert list_folder(top / "A").dirs == [top / "A" / "to_b"]
    assert file_problem(top / "A" / "pipe.jpg") and file_problem(top / "A") == "a folder, not a file"
    assert file_problem(top / "A" / "self") and file_problem(top / "nope") == "missing on disk"


def test_symlink_loops_are_reported_by_audit_fit_and_predict(tmp_path, caplog):
    root = photo_tree(tmp_path / "birds")
    links = plant_loops(root / "train" / SPECIES[0])
    os.symlink("loop2", root / "train" / "loop1")  # at the species-folder level too
    os.symlink("loop1", root / "train" / "loop2")
    expected = {str(p) for p in links.values()} | {str(root / "train" / "loop1"), str(root / "train" / "loop2")}

    with no_hang():
        assert audit.main(audit_args(root, tmp_path / "audit")) == 0
    rows = [r for r in read_findings(tmp_path / "audit" / "findings.csv") if r["issue"] == "unreadable"]
    assert {r["path"] for r in rows} == expected
    assert all("loop" in r["detail"] for r in rows)

    with no_hang():
        assert fit.main(quick_fit(root, tmp_path / "runs")) == 0
    assert expected <= set(left_out(caplog))

    ckpt_run = next((tmp_path / "runs").glob("*/*/checkpoints")).parent
    table = tmp_path / "pred.csv"
    with no_hang():
        assert predict.main([f"model={ckpt_run}", f"input={root}", f"output={table}", "top_k=1"]) == 0
    log_text = (tmp_path / "pred.log").read_text()
    assert all(f"PASSED OVER {p}: " in log_text for p in expected)
    with open(table, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(list(root.rglob("*.jpg")))


# ----------------------------------------------------------------------------- 12: outside the data root


def birds_csv(root: Path, extra: list[str]) -> Path:
    rows = [["class id", "filepaths", "labels", "data set", "scientific name"]]
    for p in sorted(root.rglob("*.jpg")):
        rel = p.relative_to(root)
        if not p.is_symlink():
            rows.append(["0", rel.as_posix(), rel.parts[1], rel.parts[0], "x"])
    rows += [["0", e, SPECIES[0], "train", "x"] for e in extra]
    with open(root / "birds.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / "birds.csv"


def test_birds_csv_entries_outside_the_root_are_never_read(tmp_path, caplog):
    root = photo_tree(tmp_path / "birds")
    secret = photo(tmp_path / "secret.jpg", 77)
    os.symlink(secret, root / "train" / SPECIES[0] / "innocent.jpg")  # inside by name, outside really
    extra = ["../secret.jpg", "../../../../../../../../" + str(secret).lstrip("/"), str(secret),
             f"train/{SPECIES[0]}/innocent.jpg"]
    birds_csv(root, extra)

    out = tmp_path / "audit"
    assert audit.main(audit_args(root, out, "check=birds525")) == 0
    outside = [r for r in read_findings(out / "findings.csv") if r["issue"] == "outside_root"]
    assert len(outside) == 4 and all(str(secret) in r["detail"] for r in outside)
    assert all(str(secret) not in s.path and "secret" not in s.path for s in read_manifest(out / "manifest.csv"))
    from birdvision.runs.artifacts import sha256_file

    assert sha256_file(secret) not in (out / "manifest.csv").read_text()  # not hashed either

    assert fit.main(quick_fit(root, tmp_path / "runs")) == 0
    assert summary_of(tmp_path / "runs")["samples"]["train"] == 8
    reasons = left_out(caplog)
    assert sum("outside the data root" in why for why in reasons.values()) == 4

    assert fit.main(quick_fit(root, tmp_path / "runs2", "data.allow_outside_root=true")) == 0
    assert summary_of(tmp_path / "runs2")["samples"]["train"] == 8 + 4


def test_manifest_entries_outside_the_root(tmp_path, caplog, capsys):
    root = photo_tree(tmp_path / "birds")
    photo(tmp_path / "secret.jpg", 77)
    rows = [Sample(str(p), p.parent.name, p.parent.parent.name) for p in sorted(root.rglob("*.jpg"))]
    rows.append(Sample(str(root / ".." / "secret.jpg"), SPECIES[0], "train"))
    manifest = write_manifest(root / "manifest.csv", rows)  # root = the manifest's folder
    assert fit.main(quick_fit(None, tmp_path / "runs", f"data.manifest={manifest}")) == 0
    assert str(root / ".." / "secret.jpg") in left_out(caplog)
    assert summary_of(tmp_path / "runs")["samples"]["train"] == 8

    elsewhere = write_manifest(tmp_path / "lists" / "m.csv", rows)  # every file outside lists/
    before = snapshot(root)
    rc = fit.main(quick_fit(None, tmp_path / "runs3", f"data.manifest={elsewhere}"))
    one_error_line(capsys, rc, "outside the data root", "data.allow_outside_root=true")
    assert snapshot(root) == before and not list((tmp_path / "runs3").glob("*/*/manifest.csv"))
    # data.root says where the files are; the one outside it is left out
    assert fit.main(quick_fit(None, tmp_path / "runs4", f"data.manifest={elsewhere}", f"data.root={root}")) == 0


def test_the_audit_manifest_trains_without_data_root(tmp_path):
    """README's flow: audit writes absolute paths into its output folder; fit reads them back."""
    root = photo_tree(tmp_path / "birds")
    out = tmp_path / "audit"
    assert audit.main(audit_args(root, out)) == 0
    assert outside_root(read_manifest(out / "manifest.csv")[0].path, out) is not None
    assert fit.main(quick_fit(None, tmp_path / "runs", f"data.manifest={out / 'manifest.csv'}")) == 0
    assert summary_of(tmp_path / "runs")["samples"]["train"] == 8


# ----------------------------------------------------------------------------- 13: formulas in CSV cells


def test_spreadsheet_cells_round_trip():
    for cell in ["=SUM(A1)", "+1+1", "-x", "@cmd", "\tTAB", "\rCR", "'=already", "''", "'plain", "-0.5", "plain", ""]:
        safe = spreadsheet_safe(cell)
        assert from_spreadsheet(safe) == cell
        assert not safe.startswith(("=", "+", "@", "\t", "\r")) and (not safe.startswith("-") or safe == "-0.5")


def test_formula_labels_are_quoted_in_every_table_for_people(tmp_path):
    evil = "=cmd|' calc'!A0"
    root = photo_tree(tmp_path / "birds", species=(evil, "-MINUS WREN"))
    out = tmp_path / "audit"
    assert audit.main(audit_args(root, out)) == 0
    raw = (out / "findings.csv").read_text()
    assert "'=cmd" in raw and ",=cmd" not in raw and ",-MINUS" not in raw
    assert {r["label"] for r in read_findings(out / "findings.csv")} >= {evil}
    assert {s.label for s in read_manifest(out / "manifest.csv")} == {evil, "-MINUS WREN"}  # round trip

    run = make_run(tmp_path / "run", root)
    table = tmp_path / "pred.csv"
    assert predict.main([f"model={run / 'checkpoints' / 'best.ckpt'}", f"input={root / 'test'}", f"output={table}",
                         "top_k=2", "min_confidence=0"]) == 0
    with open(table, newline="") as f:
        species = {r["species"] for r in csv.DictReader(f)}
    assert species == {"'" + evil, "'-MINUS WREN"}
    assert csv_text([{"class": "=1+1", "acc": -0.5}]).splitlines()[1] == "'=1+1,-0.5"


def test_markdown_tables_escape_html():
    md = markdown_table([{"class": "<script>alert(1)</script>", "n": 1}, {"class": "a|b\nc", "n": 2}])
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "a\\|b c" in md and len(md.splitlines()) == 4


# ----------------------------------------------------------------------------- other hostile files


def test_fifo_zero_bytes_folder_named_like_a_photo_and_a_bomb(tmp_path, caplog):
    root = photo_tree(tmp_path / "birds")
    sp = root / "train" / SPECIES[0]
    os.mkfifo(sp / "pipe.jpg")
    (sp / "empty.jpg").write_bytes(b"")
    photo(sp / "folder.jpg" / "inside.jpg", 50)  # a folder named like a photo: its photo counts
    from tests.test_audit import bomb_png

    bomb_png(sp / "huge.png")

    with no_hang():
        assert audit.main(audit_args(root, tmp_path / "audit")) == 0
    rows = {Path(r["path"]).name: r for r in read_findings(tmp_path / "audit" / "findings.csv")}
    assert "FIFO" in rows["pipe.jpg"]["detail"]
    assert rows["empty.jpg"]["issue"] == "unreadable" and rows["huge.png"]["issue"] == "unreadable"
    assert "inside.jpg" in {Path(s.path).name for s in read_manifest(tmp_path / "audit" / "manifest.csv")}

    with no_hang():
        assert fit.main(quick_fit(root, tmp_path / "runs")) == 0
    assert "FIFO" in left_out(caplog)[str(sp / "pipe.jpg")]

    run = next((tmp_path / "runs").glob("*/*/checkpoints")).parent
    with no_hang():
        assert predict.main([f"model={run}", f"input={sp}", f"output={tmp_path / 'p.csv'}", "top_k=1"]) == 0
    log_text = (tmp_path / "p.log").read_text()
    assert f"PASSED OVER {sp / 'pipe.jpg'}" in log_text
    assert f"SKIPPED {sp / 'empty.jpg'}" in log_text and f"SKIPPED {sp / 'huge.png'}" in log_text


def test_a_split_of_undecodable_photos_is_one_line(tmp_path, capsys):
    root = photo_tree(tmp_path / "birds")
    for p in (root / "valid").rglob("*.jpg"):
        p.write_bytes(b"")
    rc = fit.main(fit_args(root, tmp_path / "runs"))
    one_error_line(capsys, rc, "valid split can be decoded")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any folder")
def test_unlistable_class_folder_is_left_out_with_its_reason(tmp_path, caplog):
    root = photo_tree(tmp_path / "birds")
    locked = root / "train" / SPECIES[0] / "locked"
    photo(locked / "x.jpg", 60)
    locked.chmod(0)
    try:
        d = discover(root)
        assert "Permission denied" in dict(d.skipped)[str(locked)]
        assert audit.main(audit_args(root, tmp_path / "audit")) == 0
    finally:
        locked.chmod(0o755)
    rows = [r for r in read_findings(tmp_path / "audit" / "findings.csv") if r["path"] == str(locked)]
    assert rows and rows[0]["issue"] == "unreadable"


def test_discover_reports_photos_outside_class_folders_and_why_nothing_is_usable(tmp_path):
    root = photo_tree(tmp_path / "birds")
    photo(root / "train" / "stray.jpg", 70)
    assert "no label" in dict(discover(root).skipped)[str(root / "train" / "stray.jpg")]
    (tmp_path / "notes" / "WREN").mkdir(parents=True)
    (tmp_path / "notes" / "WREN" / "a.txt").write_text("x")
    with pytest.raises(DataSourceError, match="no usable files .*left out.*a.txt"):
        discover(tmp_path / "notes")


def test_recording_species_folder_with_a_control_character_is_refused(tmp_path):
    from birdvision.data.audio.io import AudioError, discover_recordings

    (tmp_path / "calls" / "WR\rEN").mkdir(parents=True)
    with pytest.raises(AudioError, match=r"species folder .*WR\\rEN.*U\+000D"):
        discover_recordings(tmp_path / "calls")


def test_manifest_saved_by_a_spreadsheet_reads(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; the header must still be found."""
    m = tmp_path / "m.csv"
    m.write_bytes("path,label\nx.jpg,'=WREN\n".encode("utf-8-sig"))
    (s,) = read_manifest(m)
    assert s.label == "=WREN" and s.path == str(tmp_path / "x.jpg")


def test_plots_draw_any_file_name(tmp_path):
    """Top-loss captions name files: undecodable bytes and a pair of ``$`` (mathtext) must still draw."""
    from birdvision.reports import plots

    name = os.fsdecode(b"caf\xe9 $x^$ {.jpg")
    fig = plots.top_losses_figure([np.zeros((8, 8, 3))], [f"true: A\n{plots._short(name, 30)}"], spectrogram=False)
    assert plots.save_figure(fig, tmp_path / "t.png").stat().st_size > 0
    fig = plots.confusion_figure(np.eye(2, dtype=int), ["$A$", "B$^"])
    assert plots.save_figure(fig, tmp_path / "c.png").stat().st_size > 0
