"""`--wandb` in offline mode (no key, no network): predictions reach W&B from the background thread."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgcls.serve.app import create_app
from imgcls.serve.settings import ServeSettings


def test_offline_run_gets_prediction_and_raw_output_tables_and_aggregates(
    exported_digits_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        images, labels = d["images"][:4], d["labels"][:4]
    app = create_app(ServeSettings(model=str(exported_digits_bundle), log_predictions=None, wandb=True))
    with TestClient(app) as client:
        answers = []
        for array in images:
            buf = io.BytesIO()
            Image.fromarray(array.squeeze()).save(buf, format="PNG")
            r = client.post("/v1/predict", files={"file": ("d.png", buf.getvalue(), "image/png")})
            assert r.status_code == 200
            answers.append(r.json())
        logger = app.state.server.wandb
    assert logger.logged == 4 and logger.dropped == 0  # flushed when the server stopped
    assert logger.last["predictions_seen"] == 4
    assert logger.last["mean_confidence"] == pytest.approx(np.mean([a["confidence"] for a in answers]))
    assert logger.last["most_frequent_class"] in {a["label"] for a in answers}
    assert logger.last["mean_latency_ms"] > 0
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    tables = {p.name.split("_")[0]: json.loads(p.read_text()) for p in run_dir.rglob("*.table.json")}
    assert tables["predictions"]["columns"] == [
        "request_id",
        "width",
        "height",
        "input",
        "class_id",
        "confidence",
        "label",
    ]
    rows = tables["predictions"]["data"]
    assert [r[0] for r in rows] == [a["request_id"] for a in answers]
    assert [r[4] for r in rows] == [a["class_id"] for a in answers]
    assert sum(r[4] == y for r, y in zip(rows, labels, strict=True)) >= 3
    assert all(r[1:3] == [16, 16] for r in rows)
    raw = tables["raw"]
    assert raw["columns"] == ["request_id", *[str(i) for i in range(10)]]
    assert all(sum(row[1:]) == pytest.approx(1.0, abs=1e-4) for row in raw["data"])
