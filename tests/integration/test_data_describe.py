"""`imgcls data describe` end to end: a real process, real image files, the files it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def imgcls(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "IMGCLS_CACHE": str(cwd / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "imgcls", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=120,
        env=env,
    )


def make_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (20, 16)) -> Path:
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.clip(rng.normal(60 + 60 * k, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.{'jpg' if i % 3 == 0 else 'png'}")
    return root


def test_describe_a_folder_writes_json_and_charts(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "shapes", {"circle": 12, "square": 6, "triangle": 9})
    (data / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "report"
    proc = imgcls("data", "describe", "--data", f"folder:{data}", "--out", str(out), "--seed", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "circle" in proc.stdout and "imbalance" in proc.stdout
    assert "skipped 1 unreadable file(s)" in proc.stderr and "broken.png" in proc.stderr
    assert "Traceback" not in proc.stderr

    report = json.loads((out / "describe.json").read_text())
    assert report["classes"] == ["circle", "square", "triangle"]
    per_class = {row["class"]: row for row in report["images_per_class"]}
    assert [per_class[c]["total"] for c in report["classes"]] == [12, 6, 9]
    assert report["splits"]["train"] + report["splits"]["val"] + report["splits"]["test"] == 27
    train = [per_class[c]["train"] for c in report["classes"]]
    assert report["imbalance_ratio"] == pytest.approx(max(train) / min(train), rel=1e-3)
    assert report["native_sizes"] == [{"height": 16, "width": 20, "images": 27}]
    assert report["input"]["size"] == [20, 20] and report["input"]["channels"] == 3
    assert len(report["input"]["mean"]) == 3 and all(0 < m < 1 for m in report["input"]["mean"])
    assert [Path(p).name for p in report["skipped"]] == ["broken.png"]

    for name in ("class_distribution.png", "samples.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 200 and img.height > 100


def test_describe_digits_with_a_set_override_and_default_out(tmp_path: Path) -> None:
    proc = imgcls(
        "data", "describe", "--data", "digits", "--set", "data.val_fraction=0.2", "--img-size", "16", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "runs" / "describe-digits" / "describe.json").read_text())
    assert report["num_classes"] == 10 and sum(report["splits"].values()) == 1797
    assert report["splits"]["val"] == pytest.approx(0.2 * (1797 - report["splits"]["test"]), abs=10)
    assert report["input"]["size"] == [16, 16]
    assert report["native_sizes"] == [{"height": 8, "width": 8, "images": 1797}]
    assert (tmp_path / "runs" / "describe-digits" / "samples.png").is_file()


def _setup_missing(tmp: Path) -> str:
    return f"folder:{tmp / 'nope'}"


def _setup_file(tmp: Path) -> str:
    (tmp / "file.png").write_bytes(b"x")
    return f"folder:{tmp / 'file.png'}"


def _setup_no_images(tmp: Path) -> str:
    (tmp / "d" / "a").mkdir(parents=True)
    (tmp / "d" / "b").mkdir()
    return f"folder:{tmp / 'd'}"


def _setup_single(tmp: Path) -> str:
    return f"folder:{make_folder(tmp / 'd', {'only': 3})}"


def _setup_empty_class(tmp: Path) -> str:
    root = make_folder(tmp / "d", {"cat": 3, "dog": 3})
    (root / "zebra").mkdir()
    return f"folder:{root}"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (_setup_missing, "does not exist"),
        (_setup_file, "is not a directory"),
        (_setup_no_images, "no images"),
        (_setup_single, "single class"),
        (_setup_empty_class, "class folder 'zebra'"),
        (lambda tmp: "cifar11", "unknown dataset 'cifar11'; did you mean 'cifar10'?"),
        (lambda tmp: "mnist", "mnist not found"),
    ],
    ids=["missing", "not-a-dir", "no-images", "single-class", "empty-class", "unknown-name", "offline-mnist"],
)
def test_describe_errors_exit_2_with_message_and_hint(tmp_path: Path, setup, message: str) -> None:
    data = setup(tmp_path)
    proc = imgcls(
        "data",
        "describe",
        "--data",
        data,
        "--data-dir",
        str(tmp_path / "dd"),
        "--set",
        "data.download=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split())  # rich may wrap long lines
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing written on failure


def test_an_out_folder_that_cannot_be_made_is_a_clear_error_not_an_unexpected_one(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    for out, said in [
        (tmp_path / "a-file" / "report", f"--out {tmp_path / 'a-file' / 'report'}: {tmp_path / 'a-file'} is a file"),
        (tmp_path / "a-file", f"--out {tmp_path / 'a-file'} is a file, not a folder"),
    ]:
        proc = imgcls("data", "describe", "--data", "digits", "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr  # was "unexpected NotADirectoryError", exit 1
        err = " ".join(proc.stderr.split())
        assert said in err and "hint: choose another --out" in err
        assert "unexpected" not in err and "Traceback" not in err
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_describe_a_folder_whose_path_is_not_utf8(tmp_path: Path) -> None:
    # the dataset's name (its path) goes into the charts' titles: matplotlib refused the undecodable byte
    data = make_folder(tmp_path / os.fsdecode(b"caf\xe9"), {"cat": 4, "dog": 4})
    proc = imgcls("data", "describe", "--data", f"folder:{data}", "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report" / "samples.png").is_file()
    assert json.loads((tmp_path / "report" / "describe.json").read_text())["classes"] == ["cat", "dog"]


def test_describe_run_from_inside_the_dataset_is_refused_before_writing(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "pets", {"cat": 3, "dog": 3})
    proc = imgcls("data", "describe", "--data", "folder:.", cwd=data)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is inside the dataset folder" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert not (data / "runs").exists()
