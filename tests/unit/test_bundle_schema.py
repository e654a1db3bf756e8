"""The typed bundle schema: today's v1 manifests keep loading, versions are checked, unknown keys are kept."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from imgcls.bundle import (
    FORMAT,
    MANIFEST,
    BundleMeta,
    ExportSection,
    edit_bundle,
    load_bundle,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from imgcls.errors import BundleError

V1 = Path(__file__).resolve().parents[1] / "data" / "bundle_v1" / "bundle.json"


def v1() -> dict:
    """bundle.json exactly as imgcls wrote it before the typed schema (format imgcls.bundle/1, digits, exported)."""
    return json.loads(V1.read_text())


def test_the_checked_in_v1_manifest_loads_typed_and_migrated() -> None:
    raw = v1()
    assert raw["format"] == "imgcls.bundle/1"
    meta = parse_manifest(raw)
    assert isinstance(meta, BundleMeta) and meta.format == FORMAT
    assert meta.name == "digits-resnet8" and meta.classes == [str(i) for i in range(10)]
    assert meta.input.size == (16, 16) and meta.input.channels == 1 and meta.input.interpolation == "bilinear"
    assert meta.model.arch == "resnet8" and meta.model.kwargs == {"width": 4}
    assert meta.metrics.eval_split == "test" and meta.metrics.test_top1 == raw["metrics"]["test_top1"]
    assert (
        meta.lineage.dataset is not None
        and meta.lineage.dataset.fingerprint == raw["lineage"]["dataset"]["fingerprint"]
    )
    assert meta.export is not None and meta.export.models["int8"].file == "model.int8.onnx"
    assert meta.export.models["int8"].top1_drop_points == 0.0  # the gate figures are typed too
    assert meta.files == raw["files"]
    assert raw == v1()  # parsing never modifies its input


def test_a_v1_manifest_round_trips_key_for_key_apart_from_the_format() -> None:
    raw = v1()
    out = parse_manifest(raw).to_dict()
    assert out.pop("format") == FORMAT
    raw.pop("format")
    assert out == raw


def test_v1_with_evaluation_on_the_validation_split_migrates_test_keys_to_val() -> None:
    raw = v1()
    raw["metrics"] |= {"eval_split": "val", "test_top1": 0.5, "test_top5": 0.9, "test_loss": 1.25}
    del raw["metrics"]["val_top1"], raw["metrics"]["val_top5"]
    m = parse_manifest(raw).metrics
    assert (m.test_top1, m.test_top5, m.test_loss) == (None, None, None)  # test_* means the test split only
    assert (m.val_top1, m.val_top5, m.val_loss) == (0.5, 0.9, 1.25)
    assert m.top1() == 0.5


def test_a_manifest_larger_than_any_imgcls_writes_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """bundle.json is read whole before parsing: one that is a link to a disk image, or gigabytes of JSON,
    took the process's memory with it."""
    from imgcls.bundle.core import MAX_MANIFEST_BYTES

    raw = json.dumps(v1() | {"files": {}})
    (tmp_path / MANIFEST).write_text(raw[:-1] + ', "pad": "' + "x" * MAX_MANIFEST_BYTES + '"}')
    with pytest.raises(BundleError, match=r"bundle.json is larger than 32 MiB") as info:
        load_bundle(tmp_path)
    assert info.value.hint and "corrupt" in info.value.hint
    (tmp_path / MANIFEST).write_text(raw)
    assert load_bundle(tmp_path).classes == v1()["classes"]


def test_a_newer_minor_bundle_is_warned_about_once_per_process_however_its_path_is_spelled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """predict and export read the manifest more than once: the same warning came two or three times, under
    'newer' and '/abs/newer'. Another bundle, or the same one at another format, is still warned about."""
    for name, fmt in (("newer", "imgcls.bundle/1.99"), ("other", "imgcls.bundle/1.98")):
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST).write_text(json.dumps(v1() | {"format": fmt, "files": {}}))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="imgcls.bundle"):
        read_manifest(Path("newer"))
        read_manifest(tmp_path / "newer")
        load_bundle(tmp_path / "newer" / ".." / "newer")
        read_manifest(Path("other"))
    warnings = [r.getMessage() for r in caplog.records if "newer than this imgcls" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("newer has bundle format imgcls.bundle/1.99")
    assert warnings[1].startswith("other has bundle format imgcls.bundle/1.98")


def test_a_newer_minor_loads_with_a_warning_and_keeps_what_it_does_not_know(caplog: pytest.LogCaptureFixture) -> None:
    raw = v1() | {"format": "imgcls.bundle/1.99", "future_section": {"a": 1}}
    raw["metrics"]["future_metric"] = 3
    with caplog.at_level(logging.WARNING, logger="imgcls.bundle"):
        meta = parse_manifest(raw)
    assert "newer than this imgcls" in caplog.text and "imgcls.bundle/1.99" in caplog.text
    out = meta.to_dict()
    assert out["future_section"] == {"a": 1} and out["metrics"]["future_metric"] == 3
    assert out["format"] == "imgcls.bundle/1.99"


@pytest.mark.parametrize(("fmt", "hint"), [("imgcls.bundle/2.0", "upgrade imgcls"), ("other/1", "re-create")])
def test_an_unknown_major_is_refused_with_a_hint(fmt: str, hint: str) -> None:
    with pytest.raises(BundleError, match=r"unknown bundle format") as info:
        parse_manifest(v1() | {"format": fmt})
    assert info.value.hint and hint in info.value.hint


def test_a_malformed_section_is_refused_with_the_key_that_is_wrong() -> None:
    raw = v1()
    raw["classes"] = "0123"
    with pytest.raises(BundleError, match=r"classes"):
        parse_manifest(raw)
    raw = v1()
    del raw["model"]
    with pytest.raises(BundleError, match=r"lacks required keys: model"):
        parse_manifest(raw)
    raw = v1()
    raw["input"]["channels"] = 2
    with pytest.raises(BundleError, match=r"input.channels must be 1 or 3"):
        parse_manifest(raw)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["cat", "dog", "cat"], r"names class 0 and class 2 both 'cat'"),
        ([], r"lists no classes"),
        (["cat", ""], r"an empty class name"),
        (["cat", "dog\x1b]0;owned\x07"], r"class 1 \('dog\\\\x1b\]0;owned\\\\x07'\) has a control character"),
        (["cat", "a\nb"], r"class 1 .* has a control character"),
        (["cat", "\u202egnp.exe"], r"class 1 .* has a control character"),
        (["cat", "caf\udce9"], r"class 1 .* is not valid UTF-8"),
        (["cat", "x" * 10_000], r"class 1 \('x{60}'…\) is 10,000 characters long, more than the 1,000"),
    ],
)
def test_classes_that_would_make_a_prediction_ambiguous_are_refused(classes: list[str], message: str) -> None:
    """predict, serve and the drift report name a class by its label: two classes of one name printed the
    same label for two ids and merged their per-class counts; an empty list served nothing but errors. A label
    that held an escape retitled the terminal of whoever ran predict on it; one of 10,000 characters was in every
    answer of the server."""
    with pytest.raises(BundleError, match=message):
        parse_manifest(v1() | {"classes": classes})


def test_names_that_differ_only_in_case_or_spacing_are_two_classes() -> None:
    assert parse_manifest(v1() | {"classes": ["Cat", "cat", " cat", *"0123456"]}).classes[:3] == ["Cat", "cat", " cat"]
    long = ["é" * 1000, "猫 (ねこ)", "tench, Tinca tinca", *"0123456"]  # at the limit, any script: labels
    assert parse_manifest(v1() | {"classes": long}).classes[:3] == long[:3]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("key", ["mean", "std"])
def test_a_mean_or_std_that_is_not_a_finite_number_is_refused(tmp_path: Path, key: str, value: str) -> None:
    """json reads NaN and Infinity: a std of Infinity normalised every image to zeros and predict answered the
    same confident class for all of them; a NaN mean gave 'nan%' for every class (exit 0)."""
    raw = v1()
    raw["input"][key] = ["@"]
    (tmp_path / MANIFEST).write_text(json.dumps(raw).replace('"@"', value))
    with pytest.raises(BundleError, match=r"input.mean/std must be finite numbers") as info:
        read_manifest(tmp_path)
    assert info.value.exit_code == 2 and "modified or is corrupt" in (info.value.hint or "")


def test_write_then_read_keeps_every_typed_section(random_bundle: Path, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(random_bundle, b)
    meta = read_manifest(b)
    meta.export = ExportSection(opset=20, models={"fp32": {"file": "weights.safetensors", "val_top1": 0.5}})
    written = write_manifest(b, meta, list(meta.files))
    again = load_bundle(b).meta
    assert again == written and again.export is not None and again.export.models["fp32"].val_top1 == 0.5
    assert json.loads((b / MANIFEST).read_text())["format"] == FORMAT


def test_edit_bundle_keeps_unknown_keys_of_a_newer_writer(random_bundle: Path, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(random_bundle, b)
    raw = json.loads((b / MANIFEST).read_text()) | {"serving_v9": {"engine": "x"}}
    (b / MANIFEST).write_text(json.dumps(raw))
    with edit_bundle(b) as edit:
        edit.meta.name = "renamed"
    after = json.loads((b / MANIFEST).read_text())
    assert after["name"] == "renamed" and after["serving_v9"] == {"engine": "x"}


def test_classes_that_do_not_fit_the_models_outputs_are_refused() -> None:
    """Three names over a model of ten outputs exported (exit 0), and predict then asked for a re-export that
    could never fix it; push stored it."""
    raw = v1()
    assert raw["model"]["num_classes"] == 10
    with pytest.raises(BundleError, match=r"lists 3 classes, but its model has 10 outputs"):
        parse_manifest(raw | {"classes": ["a", "b", "c"]})
    raw["model"]["num_classes"] = None  # a hand-made ONNX-only bundle says nothing of its model: nothing to compare
    assert len(parse_manifest(raw | {"classes": ["a", "b", "c"]}).classes) == 3
