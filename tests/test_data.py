import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from birdvision.data.manifest import (
    DataSourceError,
    ManifestError,
    Sample,
    manifest_digest,
    read_manifest,
    write_manifest,
)
from birdvision.data.photos.decode import ImageLoadError, load_rgb
from birdvision.data.photos.transforms import ImageDataset, eval_transform, train_transform
from birdvision.data.sources import discover, from_manifest
from birdvision.data.splits import LeakageError, assert_no_leakage, assign_splits, grouped_split
from birdvision.spec import ImageSpec


def test_manifest_round_trip_and_digest(tmp_path: Path):
    rows = [Sample(str(tmp_path / f"{i}.jpg"), "A" if i % 2 else "B", "train", group=f"g{i // 2}") for i in range(6)]
    rows[0].status = "dropped"
    rows[1].start_s, rows[1].end_s = 1.5, 6.5
    path = write_manifest(tmp_path / "m.csv", rows)
    back = read_manifest(path)
    assert [(s.path, s.label, s.group, s.status, s.start_s) for s in back] == [
        (s.path, s.label, s.group, s.status, s.start_s) for s in rows
    ]
    assert manifest_digest(back) == manifest_digest(rows)
    back[2].label = "C"
    assert manifest_digest(back) != manifest_digest(rows)


def test_manifest_errors(tmp_path: Path):
    (tmp_path / "m.csv").write_text("file,species\nx.jpg,A\n")
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,label,split\nx.jpg,A,training\n")
    with pytest.raises(ManifestError, match="split 'training'"):
        read_manifest(tmp_path / "m.csv")


def test_grouped_split_keeps_groups_whole_and_stratifies():
    samples = [Sample(f"{c}{r}_{k}", c, group=f"{c}{r}") for c in "ABC" for r in range(10) for k in range(3)]
    grouped_split(samples, valid_fraction=0.2, test_fraction=0.2, seed=1)
    assert_no_leakage(samples)
    for c in "ABC":
        splits = {s.split for s in samples if s.label == c}
        assert splits == {"train", "valid", "test"}
    n_train = sum(s.split == "train" for s in samples)
    assert 0.5 * len(samples) <= n_train <= 0.7 * len(samples)


def test_leakage_is_detected():
    s = [Sample("a", "A", "train", group="rec1"), Sample("b", "A", "test", group="rec1")]
    with pytest.raises(LeakageError, match="rec1"):
        assert_no_leakage(s)


def test_discover_birds525_layout(demo_photos: Path):
    d = discover(demo_photos)
    assert len(d.samples) == 3 * 20
    assert {s.split for s in d.samples} == {"train", "valid", "test"}
    assert not d.skipped


def test_discover_reports_unlisted_and_missing(tmp_path: Path, demo_photos: Path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(demo_photos, root)
    first = next((root / "train").glob("*/*.jpg"))
    first.unlink()
    extra = root / "train" / first.parent.name / "extra.jpg"
    Image.new("RGB", (8, 8)).save(extra)
    d = discover(root)
    reasons = dict(d.skipped)
    assert "missing on disk" in reasons[str(first)]
    assert "not listed" in reasons[str(extra)]


def test_class_folder_tree_gets_grouped_split(tmp_path: Path):
    for c in ("A", "B"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / c / f"{i}.png")
        (tmp_path / c / "notes.txt").write_text("x")
    d = discover(tmp_path)
    assert {s.split for s in d.samples} == {""}  # discovery reads splits, it never deals them
    assert assign_splits(d.samples, valid_fraction=0.15, test_fraction=0.15, seed=0) == "grouped split seed=0"
    assert {s.split for s in d.samples} == {"train", "valid", "test"}
    assert sum("notes.txt" in p for p, _ in d.skipped) == 2


def test_missing_root_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataSourceError, match="does not exist"):
        discover(tmp_path / "nope")


def test_manifest_source_drops_dropped_rows(tmp_path: Path, demo_photos: Path):
    d = discover(demo_photos)
    d.samples[0].status = "dropped"
    write_manifest(tmp_path / "m.csv", d.samples)
    got = from_manifest(tmp_path / "m.csv")
    assert len(got.samples) == len(d.samples) - 1
    assert got.skipped and "dropped" in got.skipped[0][1]


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_every_mode_becomes_rgb(tmp_path: Path, mode: str):
    img = Image.new("RGBA", (10, 6), (10, 200, 30, 0)).convert(mode) if mode != "I;16" else Image.new("I;16", (10, 6), 40000)
    p = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    img.save(p)
    out = load_rgb(p)
    assert out.mode == "RGB" and out.size == (10, 6)


def test_transparent_pixels_become_white(tmp_path: Path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "t.png")
    assert load_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path):
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (10, 20)


def test_broken_images_raise_clear_error(tmp_path: Path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    buf = tmp_path / "full.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf)
    (tmp_path / "trunc.jpg").write_bytes(buf.read_bytes()[:200])
    for name in ("zero.jpg", "trunc.jpg"):
        with pytest.raises(ImageLoadError, match=name):
            load_rgb(tmp_path / name)


def test_dataset_skips_a_broken_file_and_logs(tmp_path: Path, caplog):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    pre = ImageSpec(16, (0.5,) * 3, (0.5,) * 3)
    ds = ImageDataset([Sample(str(tmp_path / "bad.png"), "A"), Sample(str(good), "A")], {"A": 0}, eval_transform(pre))
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and y == 0
    assert "bad.png" in caplog.text


def test_transforms_shape_and_switch_off():
    pre = ImageSpec(24, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    img = Image.new("RGB", (50, 30), (128, 64, 32))
    off = train_transform(pre, hflip=False, perspective=0, rotation_deg=0, affine_translate=0, affine_scale=0)
    torch.testing.assert_close(off(img), eval_transform(pre)(img))
    assert train_transform(pre)(img).shape == (3, 24, 24)


def test_birds_csv_bad_columns(tmp_path: Path):
    with open(tmp_path / "birds.csv", "w", newline="") as f:
        csv.writer(f).writerows([["a", "b"], ["1", "2"]])
    with pytest.raises(DataSourceError, match="expected columns"):
        discover(tmp_path)


def test_run_manifest_from_a_relative_data_root_reads_back_from_another_folder(tmp_path, monkeypatch):
    """fit data.root=../photos writes RUN/manifest.csv; evaluate reads it relative to RUN, not the shell's folder."""
    from birdvision.data.manifest import Sample, read_manifest, write_manifest

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    m = write_manifest(tmp_path / "runs" / "r1" / "manifest.csv", [Sample("../photos/a.jpg", "wren", "train")])
    (back,) = read_manifest(m)
    assert Path(back.path).resolve() == (tmp_path / "photos" / "a.jpg").resolve() and Path(back.path).is_file()


def test_manifest_digest_counts_paths_as_the_manifest_stores_them(tmp_path: Path, monkeypatch):
    # a data root given relative to the working directory: the written manifest holds absolute paths,
    # and reading it back must give the digest training stored (evaluate checks it)
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "data")
    rows = [Sample(f"../photos/{i}.jpg", "A", "train", group=f"../photos/{i}.jpg") for i in range(3)]
    back = read_manifest(write_manifest(tmp_path / "run" / "manifest.csv", rows))
    assert back[0].path == str(tmp_path / "photos" / "0.jpg")
    assert manifest_digest(back) == manifest_digest(rows)
