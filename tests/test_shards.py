"""Streamed shards (LitData): written from the same samples a folder gives, trained from, resumed mid-epoch."""

import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest

import birdvision.fit as fit_mod
from birdvision.fit import main
from birdvision.shards import main as shards_main
from tests.conftest import fit_args


@pytest.fixture(scope="module")
def shards(demo_photos: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sh") / "shards"
    assert shards_main([f"data.root={demo_photos}", f"output={out}", "chunk_mb=1"]) == 0
    return out


def _args(out: Path, *extra: str) -> list[str]:
    return [a for a in fit_args(Path("unused"), out, *extra) if not a.startswith("data.root=")]


def test_shards_carry_classes_digest_and_every_sample(shards: Path, demo_photos: Path):
    from birdvision.data.manifest import manifest_digest, read_manifest

    meta = json.loads((shards / "shards.json").read_text())
    samples = read_manifest(shards / "manifest.csv")
    assert meta["counts"] == {"train": 36, "valid": 12, "test": 12}
    assert meta["manifest_digest"] == manifest_digest(samples) and len(meta["classes"]) == 3
    assert {Path(s.path).resolve() for s in samples} == {p.resolve() for p in demo_photos.rglob("*.jpg")}


class _Seen(L.Callback):
    """Which items each training batch held, per epoch (shard batches carry their item index)."""

    def __init__(self, log: list, stop_at: tuple[int, int] | None = None):
        self.seen, self.stop_at = log, stop_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((trainer.current_epoch, batch[2].tolist()))
        if self.stop_at == (trainer.current_epoch, batch_idx):
            raise RuntimeError("simulated kill")  # on disk: exactly what a SIGKILL after this step leaves


_BUILD_TRAINER = fit_mod.build_trainer


def _with_callback(monkeypatch, cb):
    real = _BUILD_TRAINER

    def build(cfg, run_dir, **kw):
        trainer, best = real(cfg, run_dir, **kw)
        trainer.callbacks.append(cb)
        return trainer, best

    monkeypatch.setattr(fit_mod, "build_trainer", build)


def test_a_run_killed_mid_epoch_resumes_mid_epoch_and_sees_each_sample_once(shards: Path, tmp_path: Path, monkeypatch):
    args = _args(tmp_path, f"data.shards={shards}", "trainer.max_epochs=2", "data.batch_size=4",
                 "trainer.checkpoint_every_n_steps=1", "evaluate_after_fit=false")
    first: list = []
    _with_callback(monkeypatch, _Seen(first, stop_at=(1, 3)))  # killed after the 4th step of the second epoch
    with pytest.raises(RuntimeError, match="simulated kill"):
        main(args)
    second: list = []
    _with_callback(monkeypatch, _Seen(second))
    assert main([*args, "resume=latest"]) == 0
    trained = Counter()
    for epoch, idx in first + second:
        trained.update((epoch, i) for i in idx)
    for epoch in (0, 1):
        per_epoch = Counter({i: n for (e, i), n in trained.items() if e == epoch})
        assert sorted(per_epoch) == list(range(36)) and set(per_epoch.values()) == {1}, (epoch, per_epoch)
    assert [e for e, _ in second][0] == 1  # the resumed run started inside epoch 1, not at its beginning
    (rd,) = list((tmp_path / "demo").iterdir())
    s = json.loads((rd / "summary.json").read_text())
    assert s["epochs_completed"] == 2 and "test/acc" in s


def test_shards_from_another_manifest_or_cut_short_are_refused(shards: Path, demo_photos: Path, tmp_path: Path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    chunk = next((bad / "train").glob("chunk-*.bin"))
    chunk.write_bytes(chunk.read_bytes()[:100])
    assert main(_args(tmp_path, f"data.shards={bad}")) == 2
    err = capsys.readouterr().err
    assert f"shard {chunk} is cut short (100 of" in err and "Traceback" not in err
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    meta = json.loads((other / "shards.json").read_text())
    meta["manifest_digest"] = "0" * 64
    (other / "shards.json").write_text(json.dumps(meta))
    assert main(_args(tmp_path, f"data.shards={other}")) == 2
    assert "manifest.csv does not match shards.json" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    assert main(_args(tmp_path, f"data.shards={shards}", "data.balance=sampler")) == 2
    assert "data.balance=sampler needs a map-style dataset" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    assert shards_main(["data.root=/nonexistent/photos", f"output={tmp_path / 'o'}"]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert shards_main([f"data.root={demo_photos}", f"output={shards}"]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


def test_training_batches_from_shards_mix_every_class(tmp_path: Path):
    """Written in class order, a stream shuffled only locally gives batches of one or two classes
    (LitData's default in-chunk window is 256 items); training must see every class in a batch."""
    from PIL import Image

    from birdvision.data.manifest import Sample
    from birdvision.data.photos.shards import ShardDataset, shard_loader, write_shards

    samples = []
    for c in range(4):
        folder = tmp_path / "photos" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(150):
            p = folder / f"{i}.png"
            Image.new("RGB", (4, 4), (c * 60, i, 0)).save(p)
            samples.append(Sample(str(p), f"class{c}", "train", str(p)))
    samples += [Sample(s.path, s.label, "valid", s.group + "v") for s in samples[::150]]
    write_shards(samples, tmp_path / "shards", seed=3)
    ds = ShardDataset(str(tmp_path / "shards" / "train"), lambda im: 0, [], shuffle=True, seed=1)
    for workers in (0, 2):
        first = next(iter(shard_loader(ds, batch_size=64, num_workers=workers, drop_last=True)))
        counts = Counter(first[1].tolist())
        assert len(counts) == 4 and max(counts.values()) <= 32, (workers, counts)
