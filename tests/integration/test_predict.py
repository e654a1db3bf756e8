"""`imgcls predict` in a subprocess, as a user runs it: formats, exit codes, files/dirs/globs, no torch."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def predict(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=180,
    )


@pytest.fixture(scope="module")
def test_split_pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits test split (the same split the bundle's test top-1 was measured on) as PNG files
    named ``<label>_<index>.png``, in two sub-folders."""
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset

    ds = load_dataset(DataConfig(name="digits", img_size=16), seed=0)
    assert ds.test is not None
    out = tmp_path_factory.mktemp("digits_test_pngs")
    for i, (img, label) in enumerate(zip(ds.test.images, ds.test.labels, strict=True)):
        folder = out / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray(img[..., 0], "L").save(folder / f"{label}_{i:04d}.png")
    (out / "a" / ".notes.txt").write_text("hidden: a directory walk leaves it out")
    return out


@pytest.fixture
def few(test_split_pngs: Path, tmp_path: Path) -> Path:
    """Three good PNGs and one text file disguised as a PNG."""
    out = tmp_path / "few"
    out.mkdir()
    for src in sorted((test_split_pngs / "b").glob("*.png"))[:3]:
        shutil.copy(src, out / src.name)
    (out / "zz_fake.png").write_text("I am text")
    return out


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_predict_reproduces_the_bundles_test_top1_exactly(exported_digits_bundle: Path, test_split_pngs: Path) -> None:
    out = predict(str(test_split_pngs), "--model", str(exported_digits_bundle), "--format", "json", "-b", "64")
    assert out.returncode == 0, out.stderr
    rows = json_lines(out.stdout)
    assert len(rows) == len(list(test_split_pngs.rglob("*.png")))
    correct = [int(Path(r["path"]).name.split("_")[0]) == r["class_id"] for r in rows]
    bundle = json.loads((exported_digits_bundle / "bundle.json").read_text())
    assert np.mean(correct) == pytest.approx(bundle["metrics"]["test_top1"], abs=1e-12)


def test_json_lines_have_the_documented_fields(exported_digits_bundle: Path, few: Path) -> None:
    out = predict(str(few), "--model", str(exported_digits_bundle), "--format", "json", "--top-k", "3")
    assert out.returncode == 1  # the fake PNG failed, the others were still predicted
    rows = json_lines(out.stdout)
    assert [Path(r["path"]).name for r in rows][-1] == "zz_fake.png"
    for row in rows[:3]:
        assert set(row) == {"path", "label", "class_id", "confidence", "top_k"}
        assert len(row["top_k"]) == 3 and set(row["top_k"][0]) == {"label", "class_id", "probability"}
        assert row["top_k"][0]["class_id"] == row["class_id"] and row["confidence"] == row["top_k"][0]["probability"]
        assert row["top_k"][0]["probability"] >= row["top_k"][1]["probability"] >= row["top_k"][2]["probability"]
    assert rows[3]["error"]["code"] == "unsupported_format" and "content" in rows[3]["error"]["message"]
    assert "1 of 4 file(s) could not be predicted" in out.stderr


def test_csv_has_a_header_and_one_row_per_file(exported_digits_bundle: Path, few: Path) -> None:
    out = predict(str(few), "--model", str(exported_digits_bundle), "-f", "csv", "-k", "2")
    assert out.returncode == 1
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 4
    assert list(rows[0]) == ["path", "label", "class_id", "confidence", "top_k", "error_code", "error_message"]
    assert rows[0]["label"] == rows[0]["class_id"] and 0 < float(rows[0]["confidence"]) <= 1
    assert len(json.loads(rows[0]["top_k"])) == 2
    assert rows[3]["error_code"] == "unsupported_format" and rows[3]["label"] == ""


def test_table_lists_each_file(exported_digits_bundle: Path, few: Path) -> None:
    good = sorted(few.glob("[0-9]*.png"))
    out = predict(*map(str, good), "--model", str(exported_digits_bundle))
    assert out.returncode == 0, out.stderr
    assert "confidence" in out.stdout and "CPU" in out.stdout
    for path in good:
        assert path.name in out.stdout


def test_globs_directories_and_int8(exported_digits_bundle: Path, test_split_pngs: Path) -> None:
    pattern = str(test_split_pngs / "a" / "1_*.png")  # quoted: the CLI expands it, not the shell
    out = predict(pattern, "--model", str(exported_digits_bundle), "--int8", "-f", "json")
    assert out.returncode == 0, out.stderr
    rows = json_lines(out.stdout)
    assert rows and all(Path(r["path"]).name.startswith("1_") for r in rows)
    assert sum(r["class_id"] == 1 for r in rows) >= len(rows) - 1  # a trained model, int8


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])  # table: rich exited 1 on its own
def test_a_reader_that_stops_early_ends_predict_as_it_ends_cat(
    exported_digits_bundle: Path, test_split_pngs: Path, fmt: str
) -> None:
    """`imgcls predict DIR | head -1`: click exits 1 on the broken pipe, which predict documents as "some file
    failed" (and `set -o pipefail` scripts took for that). It exits 141 (128 + SIGPIPE), as `cat` or `ls` ends."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgcls", "predict", str(test_split_pngs), "-m", str(exported_digits_bundle), "-f", fmt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    import fcntl

    fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)  # F_SETPIPE_SZ: 360 rows never fit in the pipe, however slow we are
    if fmt != "table":  # the table is written whole at the end: the reader goes away before it
        assert proc.stdout.readline()  # the first line, then the reader goes away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(180) == 141, err
    assert err == ""  # no traceback, no "some file failed"


def test_one_missing_file_among_good_ones_exits_1(exported_digits_bundle: Path, few: Path) -> None:
    good = sorted(few.glob("[0-9]*.png"))[0]
    out = predict(str(good), str(few / "missing.png"), "--model", str(exported_digits_bundle), "-f", "json")
    assert out.returncode == 1
    rows = json_lines(out.stdout)
    assert "label" in rows[0] and rows[1]["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "top-k"),
        (["--format", "xml"], "xml"),
        (["--device", "tpu"], "tpu"),
        (["--batch-size", "0"], "batch-size"),
        (["--int8", "--fp16"], "exclude each other"),
    ],
)
def test_bad_flags_exit_2(exported_digits_bundle: Path, few: Path, args: list[str], message: str) -> None:
    out = predict(str(few), "--model", str(exported_digits_bundle), *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_usage_errors_exit_2_with_a_hint(random_bundle: Path, exported_digits_bundle: Path, few: Path, tmp_path: Path):
    out = predict(str(few))
    assert out.returncode == 2 and "--model" in out.stderr
    out = predict(str(few), "--model", str(tmp_path / "nope"))
    assert out.returncode == 2 and "nope" in out.stderr
    out = predict(str(few), "--model", str(random_bundle))  # trained, never exported
    assert out.returncode == 2 and f"imgcls export {random_bundle}" in out.stderr
    (tmp_path / "empty").mkdir()
    out = predict(str(tmp_path / "empty"), "--model", str(exported_digits_bundle))
    assert out.returncode == 2 and "nothing to predict" in out.stderr


def test_tampered_model_is_refused(exported_digits_bundle: Path, few: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(exported_digits_bundle, bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    out = predict(str(few), "--model", str(bundle))
    assert out.returncode == 2
    assert "failed verification" in out.stderr and "model.onnx" in out.stderr


def test_cuda_without_a_usable_gpu_exits_2(exported_digits_bundle: Path, few: Path) -> None:
    from imgcls.errors import DeviceError
    from imgcls.runtime import Predictor

    try:
        Predictor.from_bundle(exported_digits_bundle, device="cuda")
        pytest.skip("CUDA loads on this machine")
    except DeviceError:
        pass
    out = predict(str(few), "--model", str(exported_digits_bundle), "--device", "cuda")
    assert out.returncode == 2 and "cuda" in out.stderr.lower() and "--device cpu" in out.stderr


def test_predict_never_imports_torch(exported_digits_bundle: Path, few: Path) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['imgcls', 'predict', {str(sorted(few.glob('[0-9]*.png'))[0])!r}, '--model', "
        f"{str(exported_digits_bundle)!r}, '-f', 'json']\n"
        "from imgcls.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'timm', 'evidently', 'wandb', 'onnx', 'pandas')\n"
        "               if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"label"' in out.stdout
    assert "HEAVY []" in out.stdout


def test_predict_resolves_a_store_reference(exported_digits_bundle: Path, few: Path, tmp_path: Path) -> None:
    store_mod = pytest.importorskip("imgcls.store")
    store = store_mod.Store.open(str(tmp_path / "store"))
    store.push(exported_digits_bundle, name="digits", aliases=["production"])
    ref = f"file://{tmp_path / 'store'}/digits@production"
    out = predict(str(few), "--model", ref, "-f", "json", env={"IMGCLS_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 1, out.stderr  # the fake PNG
    assert len([r for r in json_lines(out.stdout) if "label" in r]) == 3


def test_a_folder_of_photos_gives_one_line_per_file_webp_included(exported_digits_bundle: Path, tmp_path: Path):
    """Real photos (scikit-learn's sample images) as JPEG, PNG and WebP, a note and a hidden file: every visible
    file gets exactly one line; the note gets an error line naming why, and the exit code says one failed."""
    from sklearn.datasets import load_sample_images

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, pixels in zip(("china", "flower"), load_sample_images().images, strict=True):
        img = Image.fromarray(pixels)
        img.save(photos / f"{name}.jpg", quality=90)
        img.save(photos / f"{name}.png")
        img.save(photos / f"{name}.webp", quality=80)
    (photos / "notes.txt").write_text("shot on a phone\n")
    (photos / ".DS_Store").write_bytes(b"\0\1")
    out = predict(str(photos), "--model", str(exported_digits_bundle), "-f", "json")
    assert out.returncode == 1, out.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert sorted(rows) == sorted(
        ["china.jpg", "china.png", "china.webp", "flower.jpg", "flower.png", "flower.webp", "notes.txt"]
    )
    assert all("label" in rows[n] for n in rows if n != "notes.txt")  # WebP decodes by default
    assert rows["notes.txt"]["error"]["code"] == "unsupported_format"
    assert "1 of 7 file(s) could not be predicted" in out.stderr
    no_webp = predict(str(photos), "--model", str(exported_digits_bundle), "-f", "json", "--no-webp")
    refused = [r for r in map(json.loads, no_webp.stdout.splitlines()) if "error" in r]
    assert no_webp.returncode == 1 and len(refused) == 3  # the two WebP files and the note, each with a line


def test_file_names_that_would_drive_a_terminal_are_shown_escaped(
    exported_digits_bundle: Path, few: Path, tmp_path: Path
) -> None:
    """A file name holding an escape sequence (retitle, clear, recolour), an RTL override or a byte that is not
    UTF-8: the table shows each as an escape and is printed even under a strict UTF-8 locale (it was
    UnicodeEncodeError); JSON escapes them itself; CSV into a pipe keeps the name's bytes as they are."""
    folder = tmp_path / "names"
    folder.mkdir()
    good = sorted(few.glob("[0-9]*.png"))[0]
    names = {
        "evil\x1b]0;pwned\x07\x1b[2J.png": "evil\\x1b]0;pwned\\x07\\x1b[2J.png",
        "rtl\u202egnp.png": "rtl\\u202egnp.png",
        os.fsdecode(b"caf\xe9.png"): "caf\\xe9.png",
    }
    for name in names:
        shutil.copy(good, os.path.join(os.fsencode(folder), os.fsencode(name)))
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    table = predict(str(folder), "--model", str(exported_digits_bundle), env=strict)
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\u202e" not in table.stdout
    for shown in names.values():
        assert shown in table.stdout

    as_json = predict(str(folder), "-m", str(exported_digits_bundle), "-f", "json", env=strict)
    assert as_json.returncode == 0 and "\x1b" not in as_json.stdout
    assert {Path(r["path"]).name for r in json_lines(as_json.stdout)} == set(names)

    as_csv = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", str(folder), "-m", str(exported_digits_bundle), "-f", "csv"],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **strict},
        timeout=180,
    )
    assert as_csv.returncode == 0, as_csv.stderr
    paths = {os.fsencode(line.split(b",")[0]) for line in as_csv.stdout.splitlines()[1:]}
    assert {os.path.basename(p) for p in paths} == {os.fsencode(n) for n in names}
