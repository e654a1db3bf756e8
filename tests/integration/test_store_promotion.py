"""The promotion gate: an alias moves only to a version `imgcls serve` would load and that meets --require."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgcls.bundle import FORMAT, MANIFEST, BundleMeta, write_manifest
from imgcls.errors import GateError, UsageError
from imgcls.store import Store
from imgcls.store.promotion import Requirement, parse_requirements, serving_problems


def _with_metrics(bundle: Path, **metrics: float) -> Path:
    meta = json.loads((bundle / MANIFEST).read_text())
    meta["metrics"] = {**meta.get("metrics", {}), **metrics}
    write_manifest(bundle, meta, list(meta.pop("files")))
    return bundle


def test_alias_to_an_unexported_version_fails_with_a_hint_unless_forced(
    random_bundle: Path, store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = str(tmp_path / "store")
    good = cli("push", str(store_bundle), "--to", store, "--name", "digits", "--alias", "production")
    assert good.returncode == 0, good.stderr
    # a bundle with no ONNX export: pushing it is fine, making it production is not
    bad = cli("push", str(random_bundle), "--to", store, "--name", "digits", "--alias", "production")
    assert bad.returncode == 1
    assert "cannot become @production: it has no ONNX export" in bad.stderr and "imgcls export" in bad.stderr
    assert "--force" in bad.stderr and "Traceback" not in bad.stderr
    assert Store.open(store).versions("digits")[-1].seq == 1  # refused before anything was uploaded
    pushed = cli("push", str(random_bundle), "--to", store, "--name", "digits")
    assert pushed.returncode == 0, pushed.stderr
    moved = cli("models", "alias", store, "digits", "2", "production")
    assert moved.returncode == 1 and "digits version 2 cannot become @production" in moved.stderr
    assert Store.open(store).alias("digits", "production").seq == 1  # type: ignore[union-attr]
    forced = cli("models", "alias", store, "digits", "2", "production", "--force")
    assert forced.returncode == 0, forced.stderr
    assert Store.open(store).alias("digits", "production").seq == 2  # type: ignore[union-attr]
    back = cli("models", "alias", store, "digits", "1", "production")  # roll back: one command
    assert back.returncode == 0 and "-> version 1 (was 2)" in back.stdout


def test_require_gates_on_the_bundles_own_metrics(store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    version = store.push(_with_metrics(store_bundle, test_top1=0.31), name="digits").version
    with pytest.raises(GateError, match=r"test_top1 is 0.31, and test_top1>=0.9 is required"):
        store.set_alias("digits", "production", version, require=parse_requirements(["test_top1>=0.9"]))
    with pytest.raises(GateError, match="has no numeric metric 'val_top5'"):
        store.set_alias("digits", "production", version, require=[Requirement.parse("val_top5 > 0.5")])
    move = store.set_alias("digits", "production", version, require=parse_requirements(["test_top1>=0.3,test_top1<1"]))
    assert move.version.seq == 1


def test_cli_require_and_bad_requirements(store_bundle: Path, tmp_path: Path, cli) -> None:
    store = str(tmp_path / "store")
    _with_metrics(store_bundle, test_top1=0.31)
    low = cli(
        "push", str(store_bundle), "--to", store, "--name", "d", "--alias", "production", "--require", "test_top1>=0.9"
    )
    assert low.returncode == 1 and "test_top1 is 0.31" in low.stderr
    typo = cli("models", "alias", store, "d", "1", "production", "--require", "test_top1=>0.9")
    assert typo.returncode == 2 and "is not METRIC>=VALUE" in typo.stderr
    with pytest.raises(UsageError):
        Requirement.parse("top1 ~ 3")


def _manifest(**sections: object) -> BundleMeta:
    base = {
        "format": FORMAT,
        "name": "digits",
        "classes": ["0", "1"],
        "input": {"size": [8, 8], "channels": 1, "mean": [0.5], "std": [0.5]},
        "model": {"arch": "resnet8"},
    }
    return BundleMeta.model_validate({**base, **sections})


def test_serving_problems_read_failed_export_gates() -> None:
    assert serving_problems(_manifest(files={"weights.safetensors": "x"})) == ["it has no ONNX export (model.onnx)"]
    meta = _manifest(
        files={"model.onnx": "x", "model.int8.onnx": "y"},
        export={
            "models": {
                "fp32": {
                    "file": "model.onnx",
                    "parity": {"batch_32": {"max_abs_logit_diff": 0.5, "top1_agreement": 1.0}},
                    "tolerance": {"max_abs_logit_diff": 1e-3, "min_top1_agreement": 1.0},
                },
                "int8": {
                    "file": "model.int8.onnx",
                    "top1_drop_points": 4.0,
                    "tolerance": {"max_top1_drop_points": 1.0},
                },
            }
        },
    )
    assert serving_problems(meta) == [
        "its fp32 export failed the parity gate at batch_32",
        "its int8 model lost 4 top-1 points (≤ 1 allowed)",
    ]
