"""The W&B logger's request-side half (bounded, never blocking) and its figures; the drift check's failures."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgcls.serve.wandb_drift import DriftMonitor
from imgcls.serve.wandb_logger import WandbLogger, WandbRecord, drift_figures, percentiles


def _record(i: int) -> WandbRecord:
    return WandbRecord(
        request_id=str(i), width=8, height=8, thumbnail=np.zeros((8, 8, 1), np.uint8), class_id=0,
        confidence=0.9, label="a", probabilities=np.array([0.9, 0.1], np.float32), latency_ms=1.0,
        stats_source=np.zeros((8, 8, 3), np.uint8),
    )  # fmt: skip


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    drops: list[int] = []
    wb = WandbLogger(project="p", mode="offline", classes=["a", "b"], config={}, max_pending=3,
                     max_rows_per_flush=2, on_drop=lambda: drops.append(1))  # fmt: skip
    records = [_record(i) for i in range(5)]
    for r in records:
        wb.append(r)
    wb.error("predict", 415, "unsupported_format")
    assert wb.dropped == 3 and len(drops) == 3
    # beyond the rows of one interval's table, a record keeps only what the figures need: no image is held
    assert [r.thumbnail is not None for r in records[:3]] == [True, True, False]
    assert records[2].stats_source is None and records[2].probabilities is None


def test_window_percentiles() -> None:
    got = percentiles([float(v) for v in range(1, 101)])
    assert got == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})


def test_drift_figures_name_the_drifted_columns_and_the_estimate() -> None:
    summary = {
        "drift": True,
        "drifted_columns": ["brightness", "pred_class"],
        "columns": [
            {"name": "brightness", "score": 0.4, "drifted": True, "description": "brightness rose from 0.29 to 0.52"},
            {"name": "contrast", "score": 0.01, "drifted": False, "description": None},
        ],
        "sample_sizes": {"current": 500, "other_models": 3},
        "accuracy": {"estimated": 0.71, "interval": [0.68, 0.74], "reference": 0.93},
    }
    fig = drift_figures(summary)
    assert fig["drift/drift"] == 1 and fig["drift/drifted"] == "brightness, pred_class"
    assert fig["drift/drifted_columns"] == 2 and fig["drift/rows"] == 500
    assert (fig["drift/estimated_accuracy"], fig["drift/estimated_accuracy_low"]) == (0.71, 0.68)
    assert fig["drift/why/brightness"] == "brightness rose from 0.29 to 0.52"
    assert "drift/drift" not in drift_figures({**summary, "drift": None})  # too few rows: no verdict


def test_a_failing_drift_check_warns_and_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    got: list[dict] = []
    monitor = DriftMonitor(every_s=60, log_path=tmp_path / "none.sqlite", sink=got.append,
                           current=lambda: (str(tmp_path / "no-bundle"), "ab" * 32))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="imgcls.serve.wandb_drift"):
        assert monitor.check() == "failed"
    assert got == [] and "W&B drift check failed" in caplog.text


_CTRL_C_DURING_A_CHECK = """
import logging, sys, threading, time
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # a foreground job's; a background one inherits SIG_IGN
from pathlib import Path
from imgcls.serve.wandb_drift import DriftMonitor
logging.basicConfig(level=logging.WARNING, format="%(message)s")
monitor = DriftMonitor(every_s=60, log_path=Path(sys.argv[1]), sink=print, current=lambda: (sys.argv[2], "ab" * 32))
results = []
check = threading.Thread(target=lambda: results.append(monitor.check()))
check.start()
while monitor._proc is None:
    time.sleep(0.002)
try:  # the parent signals once it has read the line: the print itself may still be running when it lands
    print("checking", flush=True)
except KeyboardInterrupt:
    pass
while check.is_alive():  # as uvicorn does on Ctrl-C: the server goes on until its shutdown
    try:
        time.sleep(0.01)
    except KeyboardInterrupt:
        pass
print(results, flush=True)
"""


def test_ctrl_c_to_the_server_does_not_kill_a_drift_check_in_flight(tmp_path: Path) -> None:
    """Ctrl-C signals the terminal's whole foreground group: the check's child died of it, and the server logged
    its KeyboardInterrupt as the check's failure. The check ends as it would have (here: the bundle is missing)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_DURING_A_CHECK, str(tmp_path / "none.sqlite"), str(tmp_path / "no-bundle")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "checking"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "['failed']"
    assert "W&B drift check failed: no bundle at" in err and "KeyboardInterrupt" not in err


class _Run:
    """Stands in for an online wandb run (no network here): records what the logger asks of it."""

    def __init__(self) -> None:
        self.summary: dict = {}
        self.used: list[tuple[str, str | None]] = []

    def use_artifact(self, name: str, type: str | None = None) -> None:
        self.used.append((name, type))


@pytest.mark.parametrize(("mode", "used"), [("online", [("team/vision/digits:store-3", "model")]), ("offline", [])])
def test_the_served_artifact_is_used_online_and_recorded_offline(mode: str, used: list) -> None:
    from imgcls.serve.wandb_logger import ModelEvent

    wb = WandbLogger(project="p", mode=mode, classes=["a"], config={})
    wb.run = _Run()
    event = ModelEvent(identity={"name": "digits", "version": "3", "sha256": "ab" * 32},
                       link={"store_version": 3, "artifact": "team/vision/digits:store-3"})  # fmt: skip
    wb._link(event)
    assert wb.run.used == used  # wandb refuses use_artifact offline; the name is still recorded
    assert wb.run.summary["model/artifact"] == "team/vision/digits:store-3" and wb.run.summary["model/version"] == "3"
