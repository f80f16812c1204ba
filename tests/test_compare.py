"""Model comparison: run discovery (newest per recipe), the table, and errors on bad folders."""

import csv
import shutil
from pathlib import Path

import pytest

from birdvision.compare import main
from birdvision.fit import main as fit_main
from birdvision.runs.folders import resolve_runs
from tests.conftest import fit_args


@pytest.fixture(scope="module")
def runs_root(demo_photos, tmp_path_factory) -> Path:
    """OUTPUT_DIR with one demo run, plus an older copy of it under the same recipe."""
    out = tmp_path_factory.mktemp("runs")
    assert fit_main(fit_args(demo_photos, out, "trainer.max_epochs=1", "test_after_fit=false")) == 0
    run = next(out.glob("demo/*"))
    shutil.copytree(run, run.parent / "19990101-000000")
    return out


def test_folder_of_runs_gives_newest_per_recipe(runs_root):
    runs = resolve_runs(str(runs_root))
    assert len(runs) == 1 and runs[0].name != "19990101-000000"
    both = resolve_runs(f"{runs_root},{runs_root / 'demo' / '19990101-000000'}")
    assert len(both) == 2


def test_compare_writes_markdown_and_csv(runs_root, tmp_path):
    out = tmp_path / "cmp"
    assert main([f"runs={runs_root}", f"output_dir={out}", "iters=3", "min_seconds=0", "threads=1"]) == 0
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    r = rows[0]
    assert r["backbone"] == "test_tiny" and r["input"] == "1x3x32x32"
    assert float(r["ms_per_image"]) > 0 and float(r["weights_mb"]) > 0 and 0 <= float(r["best_val_acc"]) <= 1
    md = (out / "compare.md").read_text()
    assert "| model |" in md and "1 thread(s)" in md


def test_bad_folders_are_one_line_errors(runs_root, tmp_path, capsys):
    assert main([f"runs={tmp_path}"]) == 2
    assert "no run folder with checkpoints" in capsys.readouterr().err
    empty_run = tmp_path / "r"
    shutil.copytree(runs_root / "demo" / "19990101-000000", empty_run)
    shutil.rmtree(empty_run / "checkpoints")
    (empty_run / "checkpoints").mkdir()
    assert main([f"runs={empty_run}"]) == 2
    assert "has no checkpoints" in capsys.readouterr().err
    assert main([]) == 2
    assert "runs=DIR" in capsys.readouterr().err
