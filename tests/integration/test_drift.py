"""`imgcls drift`: the reference made at train end, the embedding output of the exported graphs, and reports over
a folder of images and over the prediction log of a real `imgcls serve` process (real evidently, real uvicorn)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from _ports import free_port
from PIL import Image

from imgcls.bundle import load_bundle
from imgcls.drift.reference import REFERENCE_FILE, load_reference
from imgcls.serve.predlog import COLUMNS, TABLE, PredictionRecord, connect, row

ROOT = Path(__file__).resolve().parents[2]


def imgcls(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "imgcls", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def test_images(exported_digits_bundle: Path) -> np.ndarray:
    """The digits test split (16×16 gray, prepared as the bundle's dataset is), never seen by the reference."""
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset
    from imgcls.export import lineage_data

    found = lineage_data(load_bundle(exported_digits_bundle).meta.lineage)
    assert found is not None
    data, seed = found
    return load_dataset(DataConfig.model_validate({**data, "download": False}), seed=seed).test.images


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a[..., 0]).save(folder / f"{i:04d}.png")
    return folder


def test_the_trained_bundle_carries_a_verified_reference_and_exports_an_embedding(exported_digits_bundle: Path) -> None:
    from imgcls.runtime import Predictor

    ref = load_reference(exported_digits_bundle)
    section = ref.section
    assert REFERENCE_FILE in ref.bundle.files  # sha256-verified, travels with push/pull
    assert section.seed == 0 and section.images == ref.size == 160  # digits' whole val split (< 1,000)
    names = [c.name for c in section.columns]
    assert names[:5] == ["brightness", "contrast", "saturation", "entropy", "sharpness"]
    assert {"pred_confidence", "pred_margin", "pred_entropy", "pred_class", "emb_0", "emb_7"} <= set(names)
    assert section.calibration.nll_after is not None and section.calibration.nll_before is not None
    assert section.calibration.nll_after <= section.calibration.nll_before
    assert set(section.thresholds.constants) == set(names)
    with np.load(ref.bundle.file(REFERENCE_FILE), allow_pickle=False) as z:
        assert z["pca_components"].shape == (8, 64)
    export = ref.bundle.meta.export
    assert export is not None
    assert export.embedding_output == "embedding"
    parity = export.models["fp32"].embedding_parity
    assert parity is not None and parity["max_abs_diff"] < 1e-3
    for precision in ("fp32", "int8"):
        predictor = Predictor.from_bundle(exported_digits_bundle, precision=precision)
        with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as z:
            probs, emb = predictor.infer_with_embedding(z["images"][:8])
        assert probs.shape == (8, 10) and emb is not None and emb.shape == (8, 8)


def test_report_over_image_folders_clean_and_inverted(
    exported_digits_bundle: Path, test_images: np.ndarray, tmp_path: Path
) -> None:
    clean = write_pngs(test_images, tmp_path / "clean")
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--images", str(clean), "--out",
               str(tmp_path / "out"), "--fail-on-drift")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "no drift" in r.stdout
    summary = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert summary["drift"] is False and summary["sample_sizes"]["current"] == len(test_images)
    assert summary["model"]["sha256"] == load_bundle(exported_digits_bundle).digest
    assert {"name", "method", "score", "threshold", "drifted"} <= set(summary["columns"][0])
    lo, hi = summary["accuracy"]["interval"]
    assert lo <= summary["accuracy"]["estimated"] <= hi and summary["accuracy"]["reference"] > 0.9
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<html" in html.lower() and "brightness" in html and len(html) > 100_000  # self-contained evidently

    inverted = write_pngs(255 - test_images, tmp_path / "inverted")
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--images", str(inverted),
               "--fail-on-drift", "--format", "json")  # fmt: skip
    assert r.returncode == 4, r.stderr
    summary = json.loads(r.stdout)
    assert summary["drift"] is True and "brightness" in summary["drifted_columns"]
    assert summary["accuracy"]["estimated"] < summary["accuracy"]["reference"] - 0.1
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--images", str(inverted))
    assert r.returncode == 0  # without --fail-on-drift the report is the product
    assert "brightness rose from" in r.stdout


@contextlib.contextmanager
def serve(bundle: Path, log: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(bundle), "--port", str(port),
           "--log-predictions", str(log)]  # fmt: skip
    with open(tmp_path / "serve.err", "wb") as err:
        process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "serve.err").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def test_report_over_the_log_of_a_real_server(
    exported_digits_bundle: Path, test_images: np.ndarray, tmp_path: Path
) -> None:
    log = tmp_path / "predictions.sqlite"
    with serve(exported_digits_bundle, log, tmp_path) as (process, url), httpx.Client(timeout=30) as client:
        for a in [*test_images, *(255 - test_images[:100])]:
            r = client.post(url + "/v1/predict", files={"file": ("d.png", png(a), "image/png")})
            assert r.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    model = str(exported_digits_bundle)
    r = imgcls("drift", "report", "--model", model, "--log", str(log), "--last", "100", "--format", "json")
    summary = json.loads(r.stdout)
    assert summary["drift"] is True and "brightness" in summary["drifted_columns"]
    assert summary["sample_sizes"]["current"] == 100
    assert any(c["name"] == "emb_0" for c in summary["columns"])  # the server logged the embedding output
    # the clean traffic alone: rows before the inverted ones (same model), compared against the reference
    conn = connect(log)
    with conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE id > ?", (len(test_images),))
    conn.close()
    r = imgcls("drift", "report", "--model", model, "--log", str(log), "--fail-on-drift")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no drift" in r.stdout


def _write_log(path: Path, sha: str, n: int, timestamp: float, other: int = 0) -> None:
    conn = connect(path)
    rows = []
    for i in range(n + other):
        rec = PredictionRecord(
            timestamp=timestamp + i, request_id=str(i), model_name="m", model_version="v",
            model_sha256=sha if i < n else "f" * 64, width=16, height=16, format="PNG", bytes=100, class_id=i % 10,
            label=f"digit_{i % 10}", confidence=0.9, top_k=[{"label": "x", "class_id": 0, "probability": 0.9},
            {"label": "y", "class_id": 1, "probability": 0.05}], latency_ms=1.0,
        )  # fmt: skip
        values = tuple(getattr(rec, f) for f in rec.__dataclass_fields__ if f != "stats")
        rows.append(row(values, {"brightness": 0.3, "contrast": 0.2, "saturation": 0.0, "entropy": 3.0,
                                 "sharpness": 0.1}))  # fmt: skip
    with conn:
        names = ", ".join(c for c, _, _ in COLUMNS)
        conn.executemany(f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' for _ in COLUMNS)})", rows)
    conn.close()


def test_bad_inputs_get_a_message_and_an_exit_code(
    exported_digits_bundle: Path, random_bundle: Path, tmp_path: Path
) -> None:
    model = str(exported_digits_bundle)
    sha = load_bundle(exported_digits_bundle).digest

    def report(*args: str) -> tuple[int, str]:
        r = imgcls("drift", "report", "--model", model, *args)
        assert "Traceback" not in r.stderr
        return r.returncode, r.stderr

    code, err = report("--log", str(tmp_path / "missing.sqlite"))
    assert code == 2 and "does not exist" in err
    connect(tmp_path / "empty.sqlite").close()
    code, err = report("--log", str(tmp_path / "empty.sqlite"))
    assert code == 2 and "holds no predictions yet" in err
    (tmp_path / "notes.sqlite").write_text("not a database")
    code, err = report("--log", str(tmp_path / "notes.sqlite"))
    assert code == 2 and "is not a prediction log" in err
    os.mkfifo(tmp_path / "pipe.sqlite")  # sqlite would wait on it for ever (the helper's timeout would say so)
    code, err = report("--log", str(tmp_path / "pipe.sqlite"))
    assert code == 2 and "is not a regular file" in err
    code, err = report("--images", str(tmp_path), "--last", "0")
    assert code == 2 and "select rows of a --log" in err
    mixed = tmp_path / "mixed"  # a folder read whole, with a file that is no log: the error names that file
    (mixed / "run").mkdir(parents=True)
    (mixed / "run" / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n')
    code, err = report("--log", str(mixed))
    assert code == 2 and f"{mixed / 'run' / 'metrics.jsonl'}: line 1 is not a prediction record" in err
    _write_log(tmp_path / "old.sqlite", sha, 5, timestamp=1_000_000.0, other=3)
    code, err = report("--log", str(tmp_path / "old.sqlite"), "--since", "24h")
    assert code == 2 and "--since 24h selects nothing" in err
    code, err = report("--log", str(tmp_path / "old.sqlite"), "--since", "yesterday")
    assert code == 2 and "is not a duration" in err
    r = imgcls("drift", "report", "--model", model, "--log", str(tmp_path / "old.sqlite"), "--format", "json")
    summary = json.loads(r.stdout)
    assert r.returncode == 0 and summary["drift"] is None  # 5 rows: no verdict
    assert summary["sample_sizes"]["other_models"] == 3
    assert "a verdict needs at least" in r.stderr

    r = imgcls("drift", "report", "--model", str(random_bundle), "--log", str(tmp_path / "old.sqlite"))
    assert r.returncode == 2 and "has no drift reference" in r.stderr and "imgcls drift reference" in r.stderr

    broken = tmp_path / "broken"
    shutil.copytree(exported_digits_bundle, broken)
    data = bytearray((broken / REFERENCE_FILE).read_bytes())
    data[-100] ^= 0xFF
    (broken / REFERENCE_FILE).unlink()
    (broken / REFERENCE_FILE).write_bytes(bytes(data))
    r = imgcls("drift", "report", "--model", str(broken), "--log", str(tmp_path / "old.sqlite"))
    assert r.returncode == 2 and REFERENCE_FILE in r.stderr and "Traceback" not in r.stderr


def _segment_record(sha: str, i: int) -> dict[str, object]:
    """One prediction as `imgcls serve --log-export` writes it (imgcls.serve.predlog.export_row)."""
    return {
        "timestamp": time.time() - 3600 + i, "request_id": str(i), "model_name": "m", "model_version": "v",
        "model_sha256": sha, "width": 16, "height": 16, "format": "PNG", "bytes": 100, "brightness": 0.3,
        "contrast": 0.2, "saturation": 0.0, "entropy": 3.0, "sharpness": 0.1, "class_id": i % 10, "label": "x",
        "confidence": 0.9, "top_k": [{"label": "x", "class_id": 0, "probability": 0.9}], "latency_ms": 1.0,
        "margin": 0.85, "pred_entropy": 0.3, "embedding": [0.1] * 8,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("confidence", float("nan"), "line 3: confidence nan is not a number from 0 to 1"),
        ("brightness", float("inf"), "line 3: brightness inf is not a number from 0 to 1"),
        ("sharpness", 1e308, "line 3: sharpness 1e+308 is not a number from 0 to 16"),
        ("class_id", "3", "line 3: class_id '3' is not a class index"),
        ("class_id", 99, "1 row(s) of this model predict class 99, but it has 10 classes (0 to 9)"),
        ("timestamp", None, "line 3: timestamp None is not a Unix time"),
        ("top_k", "garbage", "line 3: top_k 'garbage' is not a list of {label, class_id, probability}"),
        ("embedding", [0.1] * 100_000, "line 3: embedding [0.1, 0.1, "),
    ],
)
def test_a_damaged_row_of_a_log_is_named_and_refused(
    exported_digits_bundle: Path, tmp_path: Path, field: str, value: object, message: str
) -> None:
    sha = load_bundle(exported_digits_bundle).digest
    records = [_segment_record(sha, i) for i in range(150)]
    records[2][field] = value
    segment = tmp_path / "logs" / "part.jsonl"
    segment.parent.mkdir()
    segment.write_text("".join(json.dumps(r) + "\n" for r in records))  # json writes NaN and Infinity as such
    out = tmp_path / "out"
    r = imgcls(
        "drift", "report", "--model", str(exported_digits_bundle), "--log", str(segment.parent), "--out", str(out)
    )
    assert r.returncode == 2, r.stdout + r.stderr  # was an unexpected error (1), or a report with NaN/Infinity scores
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def _log_with_a_damaged_row(bundle: Path, tmp_path: Path, embedding: str, *, age_s: float) -> Path:
    """A server log of 150 rows written ``age_s`` ago, row 7's embedding replaced by ``embedding``."""
    log = tmp_path / "predictions.sqlite"
    _write_log(log, load_bundle(bundle).digest, 150, timestamp=time.time() - age_s)
    conn = connect(log)
    with conn:
        conn.execute(f"UPDATE {TABLE} SET embedding = ? WHERE id = 7", (embedding,))
    conn.close()
    return log


def test_a_damaged_row_of_an_sqlite_log_is_named_by_its_row(exported_digits_bundle: Path, tmp_path: Path) -> None:
    log = _log_with_a_damaged_row(exported_digits_bundle, tmp_path, '["a", "b"]', age_s=3600)
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", str(log))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"""{log}: row 7: embedding '["a", "b"]' is not a list of at most 64 numbers""" in r.stderr
    # the hint deletes that row, not the log: its 149 other rows are good
    assert f"sqlite3 {log} 'DELETE FROM predictions WHERE rowid = 7'" in r.stderr and "remove" not in r.stderr


def test_the_servers_drift_monitor_answers_an_error_status_for_a_damaged_row(
    exported_digits_bundle: Path, tmp_path: Path
) -> None:
    log = _log_with_a_damaged_row(exported_digits_bundle, tmp_path, '{"a": 1}', age_s=60)
    r = subprocess.run(
        [sys.executable, "-m", "imgcls.drift.monitor", str(exported_digits_bundle), str(log), "3600"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr  # was a KeyError: 0 and a traceback
    answer = json.loads(r.stdout)
    assert answer["status"] == "error" and "row 7: embedding" in answer["message"]


def test_a_damaged_or_locked_sqlite_log_is_said_to_be_so(exported_digits_bundle: Path, tmp_path: Path) -> None:
    import sqlite3

    log = tmp_path / "predictions.sqlite"
    _write_log(log, load_bundle(exported_digits_bundle).digest, 3000, timestamp=time.time() - 3600)
    conn = sqlite3.connect(log)
    conn.execute("PRAGMA journal_mode=DELETE")  # one file, as a copied log is; and a writer can lock readers out
    conn.close()
    data = log.read_bytes()
    (tmp_path / "truncated.sqlite").write_bytes(data[: len(data) // 2])  # a copy cut short
    middle = len(data) // 2
    (tmp_path / "overwritten.sqlite").write_bytes(data[:middle] + b"\xff" * 4096 + data[middle + 4096 :])

    def report(path: Path) -> subprocess.CompletedProcess[str]:
        r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", str(path))
        assert "Traceback" not in r.stderr
        return r

    for name in ("truncated.sqlite", "overwritten.sqlite"):  # was "not an SQLite database"; an unexpected error
        r = report(tmp_path / name)
        assert r.returncode == 2 and f"{tmp_path / name} is a damaged SQLite database" in r.stderr, r.stderr
        assert ".recover" in r.stderr
    writer = sqlite3.connect(log, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute(f"DELETE FROM {TABLE} WHERE id < 10")
        r = report(log)  # was "is not a prediction log (not an SQLite database)"
        assert r.returncode == 1 and "is locked by another program that is writing it" in r.stderr, r.stderr
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert report(log).returncode == 0  # nothing was lost


def test_a_segment_whose_compressed_data_is_damaged_is_named(exported_digits_bundle: Path, tmp_path: Path) -> None:
    import gzip

    sha = load_bundle(exported_digits_bundle).digest
    text = "".join(json.dumps(_segment_record(sha, i)) + "\n" for i in range(150)).encode()
    data = bytearray(gzip.compress(text, mtime=0))
    for i in range(40, 200):  # inside the deflate stream: zlib's own error, not gzip's BadGzipFile
        data[i] ^= 0x5A
    segment = tmp_path / "logs" / "part.jsonl.gz"
    segment.parent.mkdir()
    segment.write_bytes(bytes(data))
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", str(segment.parent))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr  # was "unexpected error: Error -3 ..."
    assert f"--log {segment}: not a prediction-log segment (cannot read it: Error -3 while decompressing" in r.stderr


HOSTILE_CLASS = "</script><img src=x onerror=alert(1)>"


def test_a_class_name_cannot_break_out_of_the_html_reports_script(exported_digits_bundle: Path, tmp_path: Path) -> None:
    from imgcls.bundle import edit_bundle

    bundle = tmp_path / "b"
    shutil.copytree(exported_digits_bundle, bundle)
    with edit_bundle(bundle) as edit:  # a bundle's class names are whatever its bundle.json says
        edit.meta.classes = [HOSTILE_CLASS, *edit.meta.classes[1:]]
    log = tmp_path / "predictions.sqlite"
    _write_log(log, load_bundle(bundle).digest, 150, timestamp=time.time() - 3600)
    out = tmp_path / "out"
    r = imgcls("drift", "report", "--model", str(bundle), "--log", str(log), "--out", str(out))
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert "<img src=x" not in html  # it ended evidently's data <script> and ran as HTML when the report opened
    escaped = json.dumps(HOSTILE_CLASS)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e")
    assert escaped in html  # the same name to the report's script, which shows it


def test_drift_reference_remakes_the_reference_and_re_exports(exported_digits_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(exported_digits_bundle, bundle)
    before = load_bundle(bundle).files[REFERENCE_FILE]
    r = imgcls("drift", "reference", str(bundle), "--data", "digits", "--size", "1000", "--seed", "7", "-k", "4")
    assert r.returncode == 0, r.stderr
    assert "160 images" in r.stdout
    ref = load_reference(bundle)
    assert ref.section.seed == 7 and ref.k == 4 and ref.bundle.files[REFERENCE_FILE] != before
    from imgcls.runtime import Predictor

    with np.load(bundle / "samples" / "val.npz", allow_pickle=False) as z:
        _, emb = Predictor.from_bundle(bundle, precision="int8").infer_with_embedding(z["images"][:2])
    assert emb is not None and emb.shape == (2, 4)  # both exports re-made with the new projection
    r = imgcls("drift", "reference", str(bundle), "--size", "50")
    assert r.returncode == 2 and "between 1000 and 5000" in r.stderr


def test_report_logs_its_summary_and_html_to_an_offline_wandb_run(
    exported_digits_bundle: Path, test_images: np.ndarray, tmp_path: Path
) -> None:
    pytest.importorskip("wandb")
    inverted = write_pngs(255 - test_images, tmp_path / "inverted")
    out = tmp_path / "out"
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--images", str(inverted), "--out", str(out),
               "--wandb", "--wandb-mode", "offline", "--format", "json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["drift"] is True
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert "W&B run" in r.stderr and run_dir.name.split("-")[-1] in r.stderr
    records = next(run_dir.glob("run-*.wandb")).read_bytes()
    for text in ("drifted_columns", "accuracy/estimated", "rows/current", "drift/columns", "drift/report"):
        assert text.encode() in records, text
    assert ", ".join(summary["drifted_columns"]).encode() in records  # the drifted columns, by name
    assert f"{summary['accuracy']['estimated']}".encode()[:6] in records
    (html,) = run_dir.glob("files/media/html/drift/report_*.html")
    assert html.read_text() == (out / "report.html").read_text()  # the evidently report itself
    table = next(run_dir.glob("files/media/table/drift/columns_*.table.json"))
    rows = json.loads(table.read_text())["data"]
    assert {row[0] for row in rows if row[4]} == set(summary["drifted_columns"])


def test_report_wandb_online_without_a_key_refuses_before_reporting(
    exported_digits_bundle: Path, tmp_path: Path
) -> None:
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "no-netrc"), PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "imgcls", "drift", "report", "--model", str(exported_digits_bundle), "--log",
         str(tmp_path / "missing.sqlite"), "--wandb"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "API key" in r.stderr and "--wandb-mode offline" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "wandb").exists()


def test_drift_reference_of_a_bundle_it_cannot_change_is_refused_before_the_work(
    read_only_copy: Callable[[Path], Path], exported_digits_bundle: Path
) -> None:
    """It built the reference and re-exported, then failed on a staging folder the user never made."""
    bundle = read_only_copy(exported_digits_bundle)
    before = load_bundle(bundle).files
    r = imgcls("drift", "reference", str(bundle), "--data", "digits")
    assert r.returncode == 2, r.stderr
    assert f"imgcls drift reference cannot change {bundle}" in r.stderr and "copy the bundle" in r.stderr
    assert "staging" not in r.stderr and "Traceback" not in r.stderr
    assert load_bundle(bundle).files == before
