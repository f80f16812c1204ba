"""The data audit end to end: planted problems are found and classified, nothing else is."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvision.audit import main
from birdvision.data.manifest import read_manifest
from birdvision.data.splits import assert_no_leakage

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
SPECIES = ("ALPHA FINCH", "BETA WREN", "GAMMA JAY")


def photo(seed: int, size: int = 64) -> Image.Image:
    """A distinct, photo-like image: a random colour layout, smoothly upsampled, with mild noise."""
    rng = np.random.default_rng(seed)
    grid = Image.fromarray(rng.integers(30, 225, (5, 5, 3), dtype=np.uint8))
    img = np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    img = img + rng.integers(-25, 26, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def save_jpeg(img: Image.Image, path: Path, quality: int = 92) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=quality)
    return path


def bomb_png(path: Path, side: int = 16000) -> Path:
    """A tiny PNG whose header declares side x side pixels (1-bit grey): no memory is allocated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def make_dataset(root: Path) -> dict[str, Path]:
    """Split folders with distinct photos, plus every planted problem; returns the planted paths."""
    seed = 0
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        for sp in SPECIES:
            for i in range(n):
                save_jpeg(photo(seed), root / split / sp / f"{i:02d}.jpg")
                seed += 1
    a, b, c = SPECIES
    p: dict[str, Path] = {}
    p["exact_src"] = root / "train" / a / "00.jpg"
    p["exact_copy"] = root / "valid" / a / "copy.jpg"
    shutil.copy(p["exact_src"], p["exact_copy"])
    p["near_src"] = root / "train" / b / "00.jpg"
    p["near_copy"] = root / "test" / b / "resized.jpg"
    save_jpeg(
        Image.open(p["near_src"]).resize((45, 45), Image.Resampling.LANCZOS), p["near_copy"], quality=55
    )
    p["label_src"] = root / "train" / a / "01.jpg"
    p["label_copy"] = root / "train" / c / "conflict.jpg"
    shutil.copy(p["label_src"], p["label_copy"])
    good = (root / "train" / c / "00.jpg").read_bytes()
    p["truncated"] = root / "train" / c / "truncated.jpg"
    p["truncated"].write_bytes(good[: len(good) // 2])
    p["empty"] = root / "train" / b / "empty.jpg"
    p["empty"].write_bytes(b"")
    p["bomb"] = bomb_png(root / "train" / a / "huge.png")
    p["text"] = root / "train" / b / "notes.txt"
    p["text"].write_text("not a photo\n")
    return p


def rows_by(findings: Path) -> list[dict[str, str]]:
    with open(findings, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def audit_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"output_dir={out}", "scan.progress=false", "scan.workers=1", *extra]


@pytest.fixture()
def planted(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "birds"
    return root, make_dataset(root)


def test_audit_finds_and_classifies_planted_problems(planted, tmp_path):
    root, p = planted
    out = tmp_path / "audit"
    assert main(audit_args(root, out)) == 0
    rows = rows_by(out / "findings.csv")
    assert set(rows[0]) >= {"path", "split", "label", "issue", "score", "related_path", "action"}
    by_issue: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_issue.setdefault(r["issue"], {})[r["path"]] = r

    unreadable = by_issue["unreadable"]
    assert set(unreadable) == {str(p[k]) for k in ("truncated", "empty", "bomb", "text")}
    assert "truncated" in unreadable[str(p["truncated"])]["detail"]
    assert "zero bytes" in unreadable[str(p["empty"])]["detail"]
    assert "decompression bomb" in unreadable[str(p["bomb"])]["detail"]
    assert all(r["action"] == "drop" for r in unreadable.values())

    cross_split = by_issue["cross_split_duplicate"]
    assert set(cross_split) == {str(p[k]) for k in ("exact_src", "exact_copy", "near_src", "near_copy")}
    assert cross_split[str(p["exact_src"])]["action"] == "drop"  # the train copy goes
    assert cross_split[str(p["exact_copy"])]["action"] == "keep"  # the valid copy stays
    assert cross_split[str(p["near_src"])]["action"] == "drop"
    assert cross_split[str(p["near_src"])]["related_path"] == str(p["near_copy"])

    cross_label = by_issue["cross_label_duplicate"]
    assert set(cross_label) == {str(p["label_src"]), str(p["label_copy"])}
    assert {r["action"] for r in cross_label.values()} == {"flag"}
    assert set(by_issue["exact_duplicates"]) == {
        str(p[k]) for k in ("exact_src", "exact_copy", "label_src", "label_copy")
    }
    assert set(by_issue["near_duplicates"]) == {str(p["near_src"]), str(p["near_copy"])}

    # No false findings: only planted files (and, via cleanvision's odd_size, the resized copy) appear.
    planted_paths = {str(v) for v in p.values()}
    file_rows = [r for r in rows if not r["issue"].startswith("class_")]
    assert {r["path"] for r in file_rows} <= planted_paths, [
        r for r in file_rows if r["path"] not in planted_paths
    ]

    manifest = {s.path: s for s in read_manifest(out / "manifest.csv")}
    assert manifest[str(p["exact_src"])].status == "dropped"
    assert manifest[str(p["exact_copy"])].status == "ok"
    assert manifest[str(p["label_copy"])].status == "flagged"
    assert manifest[str(p["truncated"])].status == "dropped"
    assert manifest[str(p["exact_src"])].group == manifest[str(p["exact_copy"])].group
    assert manifest[str(p["near_src"])].group == manifest[str(p["near_copy"])].group
    assert manifest[str(p["label_src"])].group == manifest[str(p["label_copy"])].group
    assert_no_leakage(list(manifest.values()))  # the dropped train copies leave no leak behind
    assert all(s.sha256 for s in manifest.values())

    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"]["unreadable"] == 4 and summary["exit_status"] == 0
    html = (out / "report.html").read_text()
    assert "data:image/jpeg;base64," in html and "Removed files" in html and "truncated.jpg" in html


def test_decision_resolves_label_conflict_and_fail_action_sets_exit_status(planted, tmp_path, capsys):
    root, p = planted
    strict = ["actions.cross_label_duplicate=fail"]
    assert main(audit_args(root, tmp_path / "a", *strict)) == 1
    assert "fail" in capsys.readouterr().err

    policy = tmp_path / "mine.yaml"
    rel = p["label_copy"].relative_to(root).as_posix()
    policy.write_text(
        "actions:\n  cross_label_duplicate: fail\n"
        f"decisions:\n  - path: {rel}\n    action: drop\n"
        "    reason: the same photo is filed under ALPHA FINCH\n"
        f"  - path: train/{SPECIES[1]}/01.jpg\n    action: relabel\n"
        f"    label: {SPECIES[2]}\n    reason: reviewed\n"
    )
    out = tmp_path / "b"
    assert main([f"check={policy}", *audit_args(root, out)]) == 0
    manifest = {s.path: s for s in read_manifest(out / "manifest.csv")}
    assert manifest[str(p["label_copy"])].status == "dropped"
    assert manifest[str(root / "train" / SPECIES[1] / "01.jpg")].label == SPECIES[2]
    rows = [r for r in rows_by(out / "findings.csv") if r["issue"] in ("cross_label_duplicate", "decision")]
    assert {(Path(r["path"]).name, r["issue"], r["action"]) for r in rows} >= {
        ("conflict.jpg", "cross_label_duplicate", "drop"),
        ("01.jpg", "cross_label_duplicate", "keep"),
        ("conflict.jpg", "decision", "drop"),
        ("01.jpg", "decision", "relabel"),
    }


def test_reaudit_uses_cache_and_recomputes_only_changed_files(planted, tmp_path):
    root, p = planted
    out = tmp_path / "audit"
    assert main(audit_args(root, out, "scan.workers=2")) == 0  # the cold scan runs on a process pool
    first = json.loads((out / "summary.json").read_text())["scan"]
    assert first["cached"] == 0 and first["workers"] == 2
    assert main(audit_args(root, out)) == 0
    second = json.loads((out / "summary.json").read_text())["scan"]
    assert second["computed"] == 0 and second["cached"] == first["files"]
    save_jpeg(photo(999), root / "valid" / SPECIES[0] / "00.jpg")
    assert main(audit_args(root, out)) == 0
    third = json.loads((out / "summary.json").read_text())["scan"]
    assert third["computed"] == 1


def test_class_folder_tree_gets_grouped_split(tmp_path):
    root = tmp_path / "tree"
    for i, sp in enumerate(SPECIES):
        for j in range(8):
            save_jpeg(photo(100 * i + j), root / sp / f"{j}.jpg")
        for k in range(3):  # duplicate clusters that must land on one side
            shutil.copy(root / sp / f"{k}.jpg", root / sp / f"{k}_copy.jpg")
    (root / SPECIES[0] / "0_copy.jpg").unlink()
    save_jpeg(Image.open(root / SPECIES[0] / "0.jpg").resize((40, 40)), root / SPECIES[0] / "0_small.jpg", 60)
    out = tmp_path / "audit"
    assert main(audit_args(root, out, "data.valid_fraction=0.25", "data.test_fraction=0.25")) == 0
    samples = read_manifest(out / "manifest.csv")
    assert {s.split for s in samples} == {"train", "valid", "test"}
    groups: dict[str, set[str]] = {}
    for s in samples:
        groups.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in groups.values())
    assert sum(1 for s in samples if s.group.startswith("dup-")) == 18
    assert not [r for r in rows_by(out / "findings.csv") if r["issue"] == "cross_split_duplicate"]


def test_birds_csv_layout_reports_unlisted_and_missing_files(tmp_path):
    root = tmp_path / "b525"
    lines = ["class id,filepaths,labels,data set,scientific name"]
    for s_i, split in enumerate(("train", "valid", "test")):
        for c, sp in enumerate(SPECIES[:2]):
            for i in range(2):
                rel = f"{split}/{sp}/{i}.jpg"
                save_jpeg(photo(1000 + 10 * s_i + 3 * c + i), root / rel)
                lines.append(f"{c}.0,{rel},{sp},{split},X Y")
    lines.append(f"0.0,train/{SPECIES[0]}/gone.jpg,{SPECIES[0]},train,X Y")
    (root / "birds.csv").write_text("\n".join(lines) + "\n")
    save_jpeg(photo(5000), root / "train" / SPECIES[0] / "extra.jpg")
    out = tmp_path / "audit"
    assert main(audit_args(root, out, "check=birds525")) == 0
    rows = rows_by(out / "findings.csv")
    issues = {(Path(r["path"]).name, r["issue"]) for r in rows}
    assert ("gone.jpg", "missing_file") in issues and ("extra.jpg", "unlisted") in issues
    summary = json.loads((out / "summary.json").read_text())
    assert [d["path"] for d in summary["decisions_not_applied"]] == ["train/BAND TAILED GUAN/055.jpg"]
    assert any(r["issue"] == "class_below_min_count" for r in rows)  # 3 train photos < 10


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_permission_is_a_finding(planted, tmp_path):
    root, p = planted
    locked = root / "train" / SPECIES[0] / "02.jpg"
    locked.chmod(0)
    try:
        assert main(audit_args(root, tmp_path / "a")) == 0
    finally:
        locked.chmod(0o644)
    rows = [r for r in rows_by(tmp_path / "a" / "findings.csv") if r["path"] == str(locked)]
    assert rows and rows[0]["issue"] == "unreadable" and "permission" in rows[0]["detail"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.root={missing}"], "does not exist"),
        (["actions.blury=keep"], "Did you mean 'actions.blurry'"),
        (["actions.blurry=discard"], "expected one of drop, flag, keep, fail"),
        (["check=birds52"], "Did you mean 'birds525'"),
        (["data.split=random"], "data.split"),
    ],
)
def test_user_errors_are_one_line(planted, tmp_path, capsys, args, message):
    root, _ = planted
    args = [a.format(missing=tmp_path / "nope") for a in args]
    rc = main(audit_args(root, tmp_path / "a") + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_bad_decisions_are_user_errors(planted, tmp_path, capsys):
    root, _ = planted
    policy = tmp_path / "p.yaml"
    policy.write_text("decisions:\n  - path: train/ALPHA FINCH/00.jpg\n    action: burn\n    reason: x\n")
    assert main([f"check={policy}", *audit_args(root, tmp_path / "a")]) == 2
    assert "burn" in capsys.readouterr().err
    policy.write_text("decisions:\n  - path: train/ALPHA FINCH/00.jpg\n    action: drop\n")
    assert main([f"check={policy}", *audit_args(root, tmp_path / "a")]) == 2
    assert "reason" in capsys.readouterr().err


def test_species_folder_without_readable_image_is_reported(tmp_path):
    root = tmp_path / "tree"
    for i, sp in enumerate(SPECIES[:2]):
        for j in range(4):
            save_jpeg(photo(10 * i + j), root / "train" / sp / f"{j}.jpg")
            save_jpeg(photo(500 + 10 * i + j), root / "valid" / sp / f"{j}.jpg")
    (root / "valid" / SPECIES[2]).mkdir(parents=True)
    (root / "valid" / SPECIES[2] / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "audit"
    assert main(audit_args(root, out)) == 0
    rows = rows_by(out / "findings.csv")
    missing = {(r["label"], r["split"]) for r in rows if r["issue"] == "class_missing_from_split"}
    assert (SPECIES[2], "valid") in missing and (SPECIES[2], "train") in missing


@pytest.mark.realdata
def test_pillow_odd_files_in_real_photos(tmp_path):
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is not present")
    src = REALDATA / "photos"
    root = tmp_path / "photos"
    for split in ("train", "valid"):
        for sp in sorted(p.name for p in (src / split).iterdir())[:3]:
            shutil.copytree(src / split / sp, root / split / sp)
    odd = REALDATA / "odd" / "images" / "pillow"
    target = root / "train" / sorted(p.name for p in (root / "train").iterdir())[0]
    for f in odd.iterdir():
        if f.is_file():
            shutil.copy(f, target / f.name)
    out = tmp_path / "audit"
    assert main(audit_args(root, out, "scan.workers=0")) == 0
    unreadable = {Path(r["path"]).name for r in rows_by(out / "findings.csv") if r["issue"] == "unreadable"}
    assert {"truncated_jpeg.jpg", "truncated_image.png", "broken.png"} <= unreadable
    assert not unreadable & {
        "hopper.jpg",
        "hopper.webp",
        "pil_sample_cmyk.jpg",
        "tiny.png",
        "hopper_gray.jpg",
    }


def test_descriptor_survives_resize_and_recompression():
    from birdvision.checks.policy import ThresholdsConfig
    from birdvision.checks.scan import descriptor

    thr = ThresholdsConfig().near_duplicate_cosine
    for seed in range(5):
        img = photo(seed, 128)
        for scale, q in ((0.35, 40), (0.6, 60), (1.8, 75)):
            buf = io.BytesIO()
            img.resize((int(128 * scale), int(128 * scale)), Image.Resampling.LANCZOS).save(
                buf, "JPEG", quality=q
            )
            other = Image.open(io.BytesIO(buf.getvalue()))
            assert float(descriptor(img, 16) @ descriptor(other, 16)) >= thr
        assert float(descriptor(img, 16) @ descriptor(photo(seed + 50, 128), 16)) < thr
