"""``serve --wandb`` in offline mode (no key, no network): what the run records, read from its own files.

A real ``imgcls serve`` process serves a model from a store whose versions were pushed with ``--wandb``; it gets
good and bad requests and an admin reload; the offline run then holds the prediction rows (image statistics,
latency, model version), the errors by status and code, windowed latency percentiles and class histograms, the
served artifact, and the drift summary of the server's own prediction log.
"""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from _ports import free_port
from _store_helpers import cli_env, run_cli, variant
from _wandb_offline import OfflineRun, offline_runs
from fastapi.testclient import TestClient
from PIL import Image

from imgcls.data.stats import STAT_NAMES
from imgcls.serve.app import create_app
from imgcls.serve.predlog import read_predictions
from imgcls.serve.settings import ServeSettings

pytest.importorskip("wandb")
TOKEN = "wandb-test-token"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.squeeze()).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits(exported_digits_bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        return d["images"], d["labels"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(WANDB_DIR=str(tmp_path / "wb"), WANDB_SILENT="true", IMGCLS_ADMIN_TOKEN=TOKEN)
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        env.pop(key, None)  # the server is told its mode by --wandb-mode, nothing else
    return env


@contextlib.contextmanager
def _serve(model: str, tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", model, "--port", str(port), *args]
    err = open(tmp_path / "serve.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(tmp_path), cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _serve_run(tmp_path: Path) -> OfflineRun:
    runs = [r for r in offline_runs(tmp_path / "wb") if r.job_type == "serve"]
    assert len(runs) == 1, runs
    return runs[0]


def test_a_served_store_model_is_monitored_in_an_offline_run(
    exported_digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    push_env = {**_env(tmp_path), "WANDB_MODE": "offline"}
    for bundle, alias in ((exported_digits_bundle, "production"), (variant(exported_digits_bundle, tmp_path, 2), "")):
        args = ["push", str(bundle), "--to", str(store), "--name", "digits", "--wandb"]
        res = run_cli(*args, *(["--alias", alias] if alias else []), env=push_env)
        assert res.returncode == 0, res.stderr
    images, labels = digits
    log = tmp_path / "predictions.sqlite"
    with _serve(f"{store}/digits@production", tmp_path, "--wandb", "--wandb-mode", "offline",
                "--wandb-every", "0.5", "--wandb-drift-every", "3s", "--log-predictions", str(log),
                "--max-upload-mb", "0.1") as (url, proc):  # fmt: skip
        before = [httpx.post(url + "/v1/predict", files={"file": ("d.png", _png(a), "image/png")}) for a in images[:6]]
        assert all(r.status_code == 200 for r in before)
        bad = {
            415: httpx.post(url + "/v1/predict", files={"file": ("x.png", b"plain text, not an image", "image/png")}),
            400: httpx.post(url + "/v1/predict", files={"file": ("x.png", _png(images[0])[:120], "image/png")}),
            413: httpx.post(url + "/v1/predict", files={"file": ("x.png", b"\0" * 200_000, "image/png")}),
            422: httpx.post(url + "/v1/predict", files={"other": ("x.png", _png(images[0]), "image/png")}),
            431: httpx.get(url + "/livez", headers={"x-padding": "a" * 40_000}),  # answered by the connection layer
        }
        assert {status: r.status_code for status, r in bad.items()} == {s: s for s in bad}
        codes = {status: r.json()["error"]["code"] for status, r in bad.items()}
        reload = httpx.post(url + "/v1/admin/reload", json={"model": f"{store}/digits:2"},
                            headers={"authorization": f"Bearer {TOKEN}"}, timeout=60)  # fmt: skip
        assert reload.status_code == 200, reload.text
        # inverted digits (a strong shift in brightness) until two drift checks have seen them
        inverted = [("files", (f"{i}.png", _png(255 - a), "image/png")) for i, a in enumerate(images[:40])]
        deadline = time.monotonic() + 120
        while _metric(url, 'imgcls_wandb_drift_checks_total{result="ok"}') < 2:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            assert httpx.post(url + "/v1/predict/batch", files=inverted, timeout=30).status_code == 200
            time.sleep(0.2)
        dropped = _metric(url, "imgcls_wandb_dropped_total")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "serve.log").read_text()

    run = _serve_run(tmp_path)
    # the model it serves: the store version's artifact, pushed with --wandb, and its identity
    assert run.config["model"]["artifact"] == "imgcls/digits:store-1"
    assert run.config["model"]["store_version"] == 1 and run.config["model"]["version"] == "1"
    assert run.summary["model/artifact"] == "imgcls/digits:store-2" and run.summary["model/version"] == "2"

    # the prediction rows: the log's per-image statistics, the latency, the model version of each row
    columns, rows = run.rows("predictions")
    rows = [dict(zip(columns, r, strict=True)) for r in rows]
    logged = {r["request_id"]: r for r in read_predictions(log)}
    first = [r.json()["request_id"] for r in before]
    assert [r["request_id"] for r in rows[:6]] == first
    assert {r["model_version"] for r in rows[:6]} == {"1"} and rows[-1]["model_version"] == "2"
    assert rows[0]["model_sha256"] != rows[-1]["model_sha256"]
    for row in rows[:6]:
        sql = logged[row["request_id"]]
        assert all(row[name] == pytest.approx(sql[name]) for name in STAT_NAMES)  # the same statistics as SQLite
        assert row["latency_ms"] == pytest.approx(sql["latency_ms"]) and row["latency_ms"] > 0
        assert row["margin"] == pytest.approx(sql["margin"]) and row["class_id"] == sql["class_id"]
    assert sum(r["class_id"] == y for r, y in zip(rows[:6], labels[:6], strict=True)) >= 5

    # errors by status and code
    totals = {k: v for k, v in run.history[-1].items() if k.startswith("errors_total/")}
    assert totals == {f"errors_total/{s}/{codes[s]}": 1 for s in bad}, totals
    # windowed figures: latency percentiles, class histograms, predictions per version
    p50, p99 = run.values("window/latency_p50_ms"), run.values("window/latency_p99_ms")
    assert p50 and all(0 < a <= b for a, b in zip(p50, p99, strict=True))
    assert run.values("window/version/1") and run.values("window/version/2")
    assert run.values("window/classes/_type")[0] == "histogram"
    assert sum(run.values("window/classes/values")[0]) == run.values("window/predictions")[0]
    assert run.values("dropped")[-1] == dropped == 0

    # the drift of the server's own traffic: the inverted digits drifted in brightness, accuracy fell
    verdicts = [row for row in run.history if row.get("drift/drift") == 1]
    assert verdicts, [row for row in run.history if any(k.startswith("drift/") for k in row)]
    assert "brightness" in verdicts[-1]["drift/drifted"]
    assert verdicts[-1]["drift/rows"] >= 100
    assert verdicts[-1]["drift/estimated_accuracy"] < verdicts[-1]["drift/reference_accuracy"]


def test_online_without_a_key_refuses_to_start_and_bad_drift_flags_exit_2(
    exported_digits_bundle: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    env["NETRC"] = str(tmp_path / "no-netrc")
    model = ["serve", "--model", str(exported_digits_bundle), "--port", str(free_port())]
    res = run_cli(*model, "--wandb", "--wandb-mode", "online", env=env)
    assert res.returncode == 2 and "API key" in res.stderr and "--wandb-mode offline" in res.stderr
    res = run_cli(*model, "--wandb-drift-every", "15m", env=env)
    assert res.returncode == 2 and "needs --wandb" in res.stderr
    res = run_cli(*model, "--wandb", "--wandb-mode", "offline", "--wandb-drift-every", "soon", env=env)
    assert res.returncode == 2 and "--wandb-drift-every: 'soon' is not a duration" in res.stderr
    assert "Traceback" not in res.stderr


def test_in_process_app_logs_rows_and_aggregates(
    exported_digits_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.chdir(tmp_path)
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        images = d["images"][:4]
    settings = ServeSettings(model=str(exported_digits_bundle), log_predictions=None, wandb=True, wandb_mode="offline")
    app = create_app(settings)
    with TestClient(app) as client:
        answers = [client.post("/v1/predict", files={"file": ("d.png", _png(a), "image/png")}).json() for a in images]
        logger = app.state.server.wandb
    assert logger.logged == 4 and logger.dropped == 0  # flushed when the server stopped
    assert logger.last["predictions_seen"] == 4
    assert logger.last["mean_confidence"] == pytest.approx(np.mean([a["confidence"] for a in answers]))
    run = _serve_run(tmp_path)
    columns, rows = run.rows("predictions")
    rows = [dict(zip(columns, r, strict=True)) for r in rows]
    assert [r["request_id"] for r in rows] == [a["request_id"] for a in answers]
    assert all(r["brightness"] is not None and r["width"] == 16 for r in rows)  # statistics without the SQLite log
    assert run.config["model"]["sha256"] == answers[0]["model"]["sha256"]
    assert "artifact" not in run.config["model"]  # a plain bundle directory: its identity only
    raw_columns, raw = run.rows("raw_outputs")
    assert raw_columns == ["request_id", *[str(i) for i in range(10)]]
    assert all(sum(row[1:]) == pytest.approx(1.0, abs=1e-4) for row in raw)
