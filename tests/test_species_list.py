"""Species lists (``species=FILE``): parsing, matching, restriction and renormalisation, in the API and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import birdvision
from birdvision.predict import main
from birdvision.prediction.species import (
    SpeciesListError,
    load_species_list,
    normalise_name,
    parse_species_text,
    restrict,
    species_mask,
)
from tests.test_predict import audio_preprocess, save_checkpoint

CLASSES = ["EUROPEAN ROBIN", "black_capped_chickadee", "Blackcap", "common waxbill"]


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- the list itself


def test_parse_ignores_comments_and_blank_lines(tmp_path):
    text = "\ufeff# my garden, spring\n\nEuropean Robin\n  Blackcap   # heard daily\n#black_capped_chickadee\n\n"
    assert parse_species_text(text.removeprefix("\ufeff")) == [(3, "European Robin"), (4, "Blackcap")]
    f = tmp_path / "garden.txt"
    f.write_bytes(text.encode("utf-8"))  # with a BOM, as Windows editors write it
    mask = load_species_list(f, CLASSES)
    assert mask.tolist() == [True, False, True, False]


def test_matching_ignores_case_whitespace_and_separators():
    assert normalise_name("  Black-capped\tChickadee ") == normalise_name("black_capped_chickadee")
    mask = species_mask(["european   robin", "BLACK-CAPPED CHICKADEE", "Common_Waxbill", "blackcap"], CLASSES)
    assert mask.all()


def test_unknown_name_is_one_line_naming_the_closest_class(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("Blackcap\n# comment\nEuropean Robn\nCommon Waxbil\n")
    with pytest.raises(SpeciesListError) as e:
        load_species_list(f, CLASSES)
    msg = str(e.value)
    assert "\n" not in msg
    assert "line 3" in msg and "'European Robn'" in msg and "closest: 'EUROPEAN ROBIN'" in msg
    assert "1 more unknown" in msg
    with pytest.raises(SpeciesListError, match="closest: 'black_capped_chickadee'"):
        load_species_list(["blak capped chickadee"], CLASSES)


def test_empty_list_missing_file_and_ambiguous_names_are_errors(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("# nothing yet\n\n")
    with pytest.raises(SpeciesListError, match="names no species"):
        load_species_list(f, CLASSES)
    with pytest.raises(SpeciesListError, match="no such file"):
        load_species_list(tmp_path / "nope.txt", CLASSES)
    with pytest.raises(SpeciesListError, match="names no species"):
        load_species_list([], CLASSES)
    with pytest.raises(SpeciesListError, match="cannot tell them apart"):
        species_mask(["robin"], ["Robin", "ROBIN", "wren"])
    assert species_mask(["wren"], ["Robin", "ROBIN", "wren"]).tolist() == [False, False, True]  # only when named


def test_restrict_renormalises_over_the_list():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    mask = np.array([True, False, True, False])
    r = restrict(probs, mask)
    np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-6)
    assert (r[:, ~mask] == 0).all()
    listed_softmax = np.exp(logits[:, mask]) / np.exp(logits[:, mask]).sum(1, keepdims=True)
    np.testing.assert_allclose(r[:, mask], listed_softmax, atol=1e-6)  # = the softmax of the listed logits
    raw = restrict(probs, mask, renormalise=False)
    np.testing.assert_array_equal(raw[:, mask], probs[:, mask])
    assert (raw[:, ~mask] == 0).all()
    # the model is certain of a species off the list (float32 underflow): no information -> uniform over the list
    sure = np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(restrict(sure, mask), [[0.5, 0.0, 0.5, 0.0]])


# ----------------------------------------------------------------------------- models: photos and calls


@pytest.fixture(scope="module")
def photo_models(tmp_path_factory, demo_photos) -> dict[str, Path]:
    from birdvision.export import main as export_main
    from tests._bird_runs import make_run

    run = make_run(tmp_path_factory.mktemp("photo_run"), demo_photos)
    out = tmp_path_factory.mktemp("photo_export")
    assert export_main([f"ckpt={run}", "format=onnx", f"output_dir={out}"]) == 0
    return {"checkpoint": run / "checkpoints" / "best.ckpt", "onnx": out / "model.onnx"}


@pytest.fixture(scope="module")
def call_models(tmp_path_factory) -> dict[str, Path]:
    from birdvision.data.manifest import Sample, write_manifest
    from birdvision.export import main as export_main

    tmp = tmp_path_factory.mktemp("call_models")
    ck = save_checkpoint(tmp / "calls.ckpt", ["alpha", "beta", "gamma", "delta"], audio_preprocess(), 1)
    samples = []
    for i, label in enumerate(["alpha", "beta", "gamma", "delta"]):
        p = tmp / "clips" / f"{label}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, (0.2 * np.random.default_rng(i).standard_normal(32000)).astype(np.float32), 32000)
        samples.append(Sample(path=str(p), label=label, split="valid", group=str(p)))
    manifest = write_manifest(tmp / "manifest.csv", samples)
    assert export_main([f"ckpt={ck}", "format=onnx", f"output_dir={tmp / 'out'}", f"parity.data={manifest}"]) == 0
    return {"checkpoint": ck, "onnx": tmp / "out" / "model.onnx"}


@pytest.mark.parametrize("engine", ["checkpoint", "onnx"])
def test_api_restricts_photo_predictions(engine, photo_models, demo_photos):
    photos = sorted((demo_photos / "test").rglob("*.jpg"))[:6]
    free = birdvision.load(photo_models[engine])
    classes = free.classes
    listed = [classes[0].lower(), f"  {classes[2]} "]
    p = birdvision.load(photo_models[engine], species=listed)
    assert p.species == [classes[0], classes[2]] and "2 listed" in repr(p)
    full, got = free.predict_batch(photos), p.predict_batch(photos)
    assert got.shape == full.shape
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert (got[:, 1] == 0).all()
    np.testing.assert_allclose(got[:, [0, 2]], full[:, [0, 2]] / full[:, [0, 2]].sum(1, keepdims=True), atol=1e-5)
    top = p.predict(photos[0], top_k=5)
    assert [s for s, _ in top] == sorted(p.species, key=lambda s: -got[0, classes.index(s)])  # only listed, best first
    kept = birdvision.load(photo_models[engine], species=listed, species_renormalise=False).predict_batch(photos)
    np.testing.assert_allclose(kept[:, [0, 2]], full[:, [0, 2]], atol=1e-6)
    with pytest.raises(SpeciesListError, match=f"closest: '{classes[1]}'"):
        p.restrict_species([classes[1][:-1] + "x"])
    assert p.restrict_species(None).species is None


def test_cli_photo_table_lists_only_listed_species(tmp_path, photo_models, demo_photos):
    classes = birdvision.load(photo_models["onnx"]).classes
    (tmp_path / "list.txt").write_text(f"# two of three\n{classes[1]}\n{classes[2].swapcase()}\n")
    out = tmp_path / "p.csv"
    assert main([f"model={photo_models['onnx']}", f"input={demo_photos / 'test'}", f"output={out}",
                 f"species={tmp_path / 'list.txt'}", "min_confidence=0"]) == 0
    rows = rows_of(out)
    by_photo: dict[str, list[dict]] = {}
    for r in rows:
        by_photo.setdefault(r["file"], []).append(r)
    assert len(by_photo) == len(list((demo_photos / "test").rglob("*.jpg")))
    for rs in by_photo.values():
        assert {r["species"] for r in rs} == {classes[1], classes[2]}  # top_k 5, but only the 2 listed ones
        assert sum(float(r["confidence"]) for r in rs) == pytest.approx(1.0, abs=2e-4)
    assert "species: 2 of 3 classes" in out.with_suffix(".log").read_text()


@pytest.mark.parametrize("engine", ["checkpoint", "onnx"])
def test_cli_calls_restricted_and_renormalised(engine, tmp_path, call_models):
    rec = tmp_path / "rec.wav"
    rng = np.random.default_rng(3)
    sf.write(rec, (0.3 * rng.standard_normal(6 * 32000)).astype(np.float32), 32000)
    args = [f"model={call_models[engine]}", f"input={rec}", "top_k=4", "min_confidence=0"]
    assert main([*args, f"output={tmp_path / 'all.csv'}"]) == 0
    (tmp_path / "list.txt").write_text("Beta\ngamma  # the usual two\n")
    assert main([*args, f"output={tmp_path / 'two.csv'}", f"species={tmp_path / 'list.txt'}"]) == 0
    assert main([*args, f"output={tmp_path / 'raw.csv'}", f"species={tmp_path / 'list.txt'}",
                 "species_renormalise=false"]) == 0
    full: dict[tuple[str, str], float] = {(r["start_s"], r["species"]): float(r["confidence"])
                                          for r in rows_of(tmp_path / "all.csv")}
    two, raw = rows_of(tmp_path / "two.csv"), rows_of(tmp_path / "raw.csv")
    assert {r["species"] for r in two} == {r["species"] for r in raw} == {"beta", "gamma"}
    assert len(two) == len(raw) == 2 * 6  # 6 windows, both listed species in each
    checked = 0
    for start in {r["start_s"] for r in two}:
        pair = {r["species"]: float(r["confidence"]) for r in two if r["start_s"] == start}
        assert sum(pair.values()) == pytest.approx(1.0, abs=2e-4)
        total = full[(start, "beta")] + full[(start, "gamma")]
        if total > 0.05:  # renormalised = the model's probabilities divided by the listed total (4-place CSV values)
            assert pair["beta"] == pytest.approx(full[(start, "beta")] / total, abs=3e-3)
            checked += 1
    assert checked >= 3
    for r in raw:
        assert float(r["confidence"]) == pytest.approx(full[(r["start_s"], r["species"])], abs=1e-4)


def test_cli_species_errors_are_one_line(tmp_path, call_models, capsys):
    rec = tmp_path / "rec.wav"
    sf.write(rec, np.zeros(32000, np.float32), 32000)
    (tmp_path / "typo.txt").write_text("alpha\ngamma\ndeltta\n")
    (tmp_path / "none.txt").write_text("# to do\n")
    for lst, msg in ((tmp_path / "typo.txt", "line 3: 'deltta' is not one of the model's 4 species; closest: 'delta'"),
                     (tmp_path / "none.txt", "names no species"), (tmp_path / "missing.txt", "no such file")):
        assert main([f"model={call_models['onnx']}", f"input={rec}", f"output={tmp_path / 'x.csv'}",
                     f"species={lst}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: species list") and msg in err[-1]


def test_folder_journal_is_not_reused_across_species_lists(tmp_path, call_models):
    folder = tmp_path / "recs"
    folder.mkdir()
    for i in range(2):
        sf.write(folder / f"r{i}.wav", (0.3 * np.random.default_rng(i).standard_normal(2 * 32000)).astype(np.float32),
                 32000)
    (tmp_path / "a.txt").write_text("alpha\nbeta\n")
    (tmp_path / "b.txt").write_text("gamma\ndelta\n")
    out = tmp_path / "p.csv"
    base = [f"model={call_models['onnx']}", f"input={folder}", f"output={out}"]
    assert main([*base, f"species={tmp_path / 'a.txt'}"]) == 0
    assert {r["species"] for r in rows_of(out)} <= {"alpha", "beta"}
    assert main([*base, f"species={tmp_path / 'b.txt'}"]) == 0
    assert {r["species"] for r in rows_of(out)} <= {"gamma", "delta"}


def test_species_list_keeps_a_silent_window_silent_in_a_no_call_model(tmp_path):
    """The no-call class stays in the renormalisation: an empty window must not turn into a listed species."""
    from birdvision.prediction.predictor import Predictor

    class Fixed(Predictor):
        engine = "fixed"

        def _forward(self, raw):
            # window 0: nothing (no-call 0.9); window 1: a Blackcap call
            return np.array([[0.04, 0.03, 0.02, 0.01, 0.90], [0.05, 0.05, 0.80, 0.05, 0.05]], np.float32)[: len(raw)]

    classes = [*CLASSES, "nocall"]
    p = Fixed(source=tmp_path / "m.onnx", classes=classes, preprocess=audio_preprocess(), temperature=1.0,
              metadata={"background_class": "nocall"})
    x = np.zeros((2, p.input_shape[0]), np.float32)
    p.restrict_species(["EUROPEAN ROBIN", "Blackcap"])
    assert p.species == ["EUROPEAN ROBIN", "Blackcap"]  # the background class is kept but not listed as a species
    probs = p.predict_batch(x)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert probs[0, 4] > 0.9  # the empty window's mass stayed on no-call, not on the robin
    rows = p.decide(probs, top_k=3, min_confidence=0.5)
    assert rows[0] == [] and [s for s, _ in rows[1]] == ["Blackcap"]
    assert all(s != "nocall" for s, _ in p.predict(x[0], top_k=5))  # never reported, off-list species neither
    assert {s for s, _ in p.predict(x[0], top_k=5)} == {"EUROPEAN ROBIN", "Blackcap"}
