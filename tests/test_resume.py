"""Resume in every direction: extend a finished run, continue an interrupted one, refuse unsafe or foreign
checkpoints before writing anything, one writer per run folder."""

import contextlib
import csv
import fcntl
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from birdvision.fit import main
from birdvision.runs.folders import RunError, resume_checkpoint, run_lock
from birdvision.training.module import OneCycle
from tests.conftest import fit_args


@pytest.fixture(scope="module")
def finished(demo_photos: Path, tmp_path_factory) -> Path:
    """A finished 2-epoch run (tested, evaluated, reported)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(fit_args(demo_photos, out)) == 0
    (run_dir,) = list((out / "demo").iterdir())
    return run_dir


def _copy(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    shutil.copytree(run, out / "demo" / run.name)
    return out, out / "demo" / run.name


def _rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "metrics.csv", newline="")))


def _tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def test_one_cycle_replans_when_the_run_grows():
    def sched(total):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, OneCycle(opt, max_lr=1.0, total_steps=total, pct_start=0.25)

    opt, s = sched(20)
    for _ in range(20):
        opt.step()
        s.step()
    saved = s.state_dict()
    with pytest.raises(ValueError, match="Tried to step"):  # what plain OneCycleLR does on the 21st step
        opt.step()
        s.step()

    opt2, s2 = sched(30)
    s2.load_state_dict(saved)
    ref_opt, ref = sched(30)
    for _ in range(20):
        ref_opt.step()
        ref.step()
    assert s2.total_steps == 30 and s2.get_last_lr() == pytest.approx(ref.get_last_lr())
    for _ in range(10):  # the ten new steps run and follow the 30-step plan to its end
        opt2.step()
        s2.step()
        ref_opt.step()
        ref.step()
        assert s2.get_last_lr() == pytest.approx(ref.get_last_lr())

    opt3, s3 = sched(20)  # same plan: restored exactly
    s3.load_state_dict(saved)
    assert s3.state_dict()["last_epoch"] == 20 and s3.total_steps == 20


def test_extending_a_finished_run_trains_the_extra_epoch_and_keeps_history(finished: Path, tmp_path: Path, demo_photos):
    out, rd = _copy(finished, tmp_path)
    steps_before = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert main(fit_args(demo_photos, out, "trainer.max_epochs=3", "resume=latest")) == 0
    s = json.loads((rd / "summary.json").read_text())
    assert s["epochs_completed"] == 3 and "test/acc" in s and s["resumed_from"].endswith("last.ckpt")
    assert Path(s["best_checkpoint"]).parent == rd / "checkpoints"  # the moved folder's own, not the original's
    last = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == steps_before * 3 // 2
    assert (rd / "checkpoints" / "epoch=002.ckpt").is_file()
    rows = _rows(rd)
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/acc")) == [0, 1, 2]
    assert len([r for r in rows if r.get("test/acc")]) == 2  # the first test and the one after the extra epoch


def test_resume_takes_last_not_the_rewritten_best(finished: Path, tmp_path: Path):
    _, rd = _copy(finished, tmp_path)
    ck = rd / "checkpoints"
    now = time.time()
    os.utime(ck / "best.ckpt", (now + 10, now + 10))  # evaluation rewrote it after training
    assert resume_checkpoint(rd) == ck / "last.ckpt"
    os.utime(ck / "epoch=001.ckpt", (now + 20, now + 20))  # killed between epoch=001 and last.ckpt
    assert resume_checkpoint(rd) == ck / "epoch=001.ckpt"
    (ck / "last.ckpt").unlink()
    (ck / "epoch=001.ckpt").unlink()
    assert resume_checkpoint(rd) == ck / "epoch=000.ckpt"


def test_a_run_killed_during_test_gets_its_summary_and_keeps_its_history(finished: Path, tmp_path: Path, demo_photos):
    out, rd = _copy(finished, tmp_path)
    (rd / "summary.json").unlink()
    rows = [r for r in _rows(rd) if not r.get("test/acc")]  # the kill came before the test row was written
    with open(rd / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(fit_args(demo_photos, out, "resume=latest")) == 0
    s = json.loads((rd / "summary.json").read_text())
    assert s["epochs_completed"] == 2 and "test/acc" in s
    after = _rows(rd)
    assert sorted(int(r["epoch"]) for r in after if r.get("val/acc")) == [0, 1]
    assert len([r for r in after if r.get("test/acc")]) == 1


def test_interrupted_attempts_rows_are_dropped_on_resume(finished: Path, tmp_path: Path, demo_photos):
    out, rd = _copy(finished, tmp_path)
    for name in ("epoch=001.ckpt", "last.ckpt", "best.ckpt"):
        (rd / "checkpoints" / name).unlink()
    (rd / "summary.json").unlink()
    (rd / "checkpoints" / ".last.ckpt.k3j2h1.tmp").write_bytes(b"half a checkpoint")  # killed mid-write
    assert main(fit_args(demo_photos, out, "resume=latest")) == 0
    rows = _rows(rd)
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/acc")]
    assert sorted(val_epochs) == [0, 1]  # epoch 1 of the interrupted attempt is not counted twice
    assert not list(rd.rglob("*.tmp"))


class _RunsCodeOnLoad:
    """Unpickling this object would create a file: the test for 'a checkpoint ran code'."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("force_unsafe", [False, True])
def test_resume_from_a_malicious_file_runs_nothing_and_writes_nothing(force_unsafe, tmp_path: Path, demo_photos, capsys,
                                                                       monkeypatch):
    if force_unsafe:  # torch's switch back to unpickling anything: explicit weights_only=True still wins
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    evil_dir = tmp_path / "downloads"
    evil_dir.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"hyper_parameters": _RunsCodeOnLoad(marker), "state_dict": {}}, evil_dir / "model.ckpt")
    (evil_dir / "manifest.csv").write_text("the user's own file\n")
    before = _tree(evil_dir)
    out = tmp_path / "out"
    assert main(fit_args(demo_photos, out, f"resume={evil_dir / 'model.ckpt'}")) == 2
    err = capsys.readouterr().err
    assert "not a readable PyTorch checkpoint" in err and "Traceback" not in err
    assert not marker.exists() and _tree(evil_dir) == before and not out.exists()


def test_resume_from_a_loose_checkpoint_continues_in_a_new_run_folder(finished: Path, tmp_path: Path, demo_photos):
    loose = tmp_path / "shared_with_me"
    loose.mkdir()
    shutil.copy(finished / "checkpoints" / "epoch=000.ckpt", loose / "model.ckpt")
    (loose / "manifest.csv").write_text("the user's own file\n")
    before = _tree(loose)
    out = tmp_path / "out"
    assert main(fit_args(demo_photos, out, f"resume={loose / 'model.ckpt'}")) == 0
    assert _tree(loose) == before
    (rd,) = list((out / "demo").iterdir())
    s = json.loads((rd / "summary.json").read_text())
    assert s["epochs_completed"] == 2 and (rd / "config.yaml").is_file() and (rd / "manifest.csv").is_file()
    assert Path(s["best_checkpoint"]).parent == rd / "checkpoints" and "test/acc" in s


def test_resume_with_another_backbone_is_refused_before_writing(finished: Path, tmp_path: Path, demo_photos, capsys):
    out, rd = _copy(finished, tmp_path)
    before = _tree(rd)
    assert main(fit_args(demo_photos, out, "model.backbone=resnet18", f"resume={rd}")) == 2
    err = capsys.readouterr().err
    assert "the checkpoint is a test_tiny" in err and "Traceback" not in err
    assert _tree(rd) == before


@contextlib.contextmanager
def _held_elsewhere(run_dir: Path, pid: int | None = None):
    """The run folder's lock as another process would hold it (a separate open file description), naming a live
    process (this one) unless ``pid`` says otherwise."""
    pid = os.getpid() if pid is None else pid
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid}\n".encode())
    try:
        yield
    finally:
        os.close(fd)


def test_a_second_writer_is_refused(finished: Path, tmp_path: Path, demo_photos, capsys):
    out, rd = _copy(finished, tmp_path)
    before = _tree(rd)
    with _held_elsewhere(rd):
        assert main(fit_args(demo_photos, out, "trainer.max_epochs=3", "resume=latest")) == 2
    err = capsys.readouterr().err
    assert f"in use by another birdvision process (pid {os.getpid()})" in err
    assert {k: v for k, v in _tree(rd).items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
    assert json.loads((rd / "summary.json").read_text())["epochs_completed"] == 2


@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=0", "trainer.max_epochs=0: must be >= 1"),
    ("trainer.max_epochs=-3", "must be >= 1"),
    ("data.batch_size=0", "data.batch_size=0: must be >= 1"),
    ("optim.lr=-0.1", "optim.lr=-0.1: must be > 0"),
    ("optim.lr=nan", "expected a number, got nan"),
    ("data.image_size=2", "data.image_size=2: must be >= 16"),
    ("data.valid_fraction=1.5", "must be < 1"),
    ("data.test_fraction=0.6", "data.valid_fraction + data.test_fraction"),
    ("model.backbone=resnet19", "unknown backbone 'resnet19'"),
    ("trainer.precision=bf17", "trainer.precision='bf17': expected one of"),
    ("data.mode=video", "data.mode='video': expected one of image, audio"),
    ("audio.augment.gain_p=1.5", "audio.augment.gain_p=1.5: must be <= 1"),
    ("audio.augment.gain_db=[6,-6]", "expected [low, high]"),
    ("trainer.strategy=ddpp", "trainer.strategy='ddpp' is not a Lightning strategy. Did you mean 'ddp'?"),
    ("trainer.devices=0", "trainer.devices=0: expected a count"),
])
def test_impossible_values_are_refused_before_a_run_folder_exists(override, message, demo_photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(fit_args(demo_photos, out, "data.valid_fraction=0.5" if "test_fraction" in override else "seed=1",
                         override)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not out.exists()


def test_help_shows_the_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "trainer.max_epochs (int) = 12  [1 <= x <= 100000]" in out and "data.mode (str) = image  [image|audio]" in out


def test_lightning_loader_does_not_unpickle_code(tmp_path: Path):
    from birdvision.training.module import BirdClassifier

    marker = tmp_path / "pwned"
    torch.save({"hyper_parameters": _RunsCodeOnLoad(marker), "state_dict": {}}, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        BirdClassifier.load_from_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_evaluate_rewriting_best_holds_the_run_and_clears_stale_temporaries(finished: Path, tmp_path: Path, capsys):
    from birdvision.evaluate import main as evaluate

    _, rd = _copy(finished, tmp_path)
    stale = rd / "checkpoints" / ".best.ckpt.x1y2z3.tmp"
    stale.write_bytes(b"killed during a temperature rewrite")
    with _held_elsewhere(rd):  # a fit still writing this run: the temperature rewrite must wait its turn
        assert evaluate([f"ckpt={rd}", "split=valid", f"output_dir={tmp_path / 'ev'}"]) == 2
    assert "in use by another birdvision process" in capsys.readouterr().err
    assert evaluate([f"ckpt={rd}", "split=valid", f"output_dir={tmp_path / 'ev'}"]) == 0
    assert not stale.exists()


def test_the_run_lock_is_reentrant_within_a_process_and_released_after(tmp_path: Path):
    with run_lock(tmp_path):
        with run_lock(tmp_path):  # fit holds its run while evaluating (and rewriting) its best checkpoint
            pass
        with pytest.raises(BlockingIOError), _held_elsewhere(tmp_path):
            pass
    with _held_elsewhere(tmp_path):  # released: another process can take it
        pass


def test_a_killed_runs_lock_is_waited_for_while_its_workers_exit(tmp_path: Path, monkeypatch):
    import subprocess
    import threading

    import birdvision.runs.folders as runs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has exited: the run's killed main process
    release = threading.Event()

    def orphan_worker():  # a forked data-loader worker still holds the lock for a moment
        with _held_elsewhere(tmp_path, pid=dead):
            ready.set()
            release.wait(5)

    ready = threading.Event()
    t = threading.Thread(target=orphan_worker)
    t.start()
    ready.wait(5)
    threading.Timer(0.5, release.set).start()
    with run_lock(tmp_path):  # waits for the worker, then holds the run
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    t.join()
    # a lock that stays held past the wait is refused, naming the holder
    monkeypatch.setattr(runs, "ORPHAN_WAIT_S", 0.3)
    with _held_elsewhere(tmp_path, pid=dead), pytest.raises(RunError, match=f"pid {dead}"):
        with run_lock(tmp_path):
            pass


def test_an_output_dir_that_cannot_hold_runs_is_one_line(demo_photos: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(fit_args(demo_photos, blocker, "trainer.max_epochs=1")) == 2
    err = capsys.readouterr().err
    assert f"output_dir={blocker}: cannot create" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_two_process_ddp_fit_writes_one_run_folder_and_resumes(demo_photos: Path, tmp_path: Path):
    """Lightning's DDP (gloo, 2 CPU processes) launched the way users launch it: once, from the command line."""
    import subprocess
    import sys

    from birdvision.models import create_model

    weights = tmp_path / "tiny.pth"  # 'pretrained' weights, so the head-only warm-up (frozen backbone) runs under DDP
    torch.save(create_model("test_tiny", 10).state_dict(), weights)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "birdvision.fit", *fit_args(demo_photos, out, "trainer.accelerator=cpu",
                                                            "trainer.devices=2", "trainer.strategy=ddp",
                                                            f"model.weights_path={weights}", "finetune.warmup_epochs=1")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((out / "demo").iterdir())
    assert len(runs) == 1, runs
    rd = runs[0]
    assert len(list(out.rglob("summary.json"))) == 1 and len(list(out.rglob("report.html"))) == 1
    assert (r.stdout + r.stderr).count("evaluating ") == 1  # the post-fit evaluation ran once
    s = json.loads((rd / "summary.json").read_text())
    assert s["world_size"] == 2 and s["global_batch_size"] == 16 and s["epochs_completed"] == 2
    r = subprocess.run(args + ["trainer.max_epochs=3", "resume=latest"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((out / "demo").iterdir()) == [rd]
    assert json.loads((rd / "summary.json").read_text())["epochs_completed"] == 3


@pytest.mark.slow
def test_ddp_killed_with_sigkill_leaves_no_rank_behind_and_resumes(demo_photos: Path, tmp_path: Path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    args = [sys.executable, "-m", "birdvision.fit", *fit_args(demo_photos, out, "trainer.accelerator=cpu",
                                                            "trainer.devices=2", "trainer.strategy=ddp",
                                                            "trainer.max_epochs=3")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("demo/*/checkpoints/epoch=000.ckpt")):
        time.sleep(0.5)
    assert list(out.glob("demo/*/checkpoints/epoch=000.ckpt")), "no first checkpoint"
    p.send_signal(signal.SIGKILL)
    p.wait()
    time.sleep(3)
    ranks = subprocess.run(["pgrep", "-f", f"output_dir={out}"], capture_output=True, text=True).stdout.split()
    assert ranks == []  # rank 1 ended with its launcher
    r = subprocess.run(args + ["resume=latest"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (rd,) = list((out / "demo").iterdir())
    assert json.loads((rd / "summary.json").read_text())["epochs_completed"] == 3
