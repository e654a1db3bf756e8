"""``--wandb-drift-every``: the drift summary of the server's own prediction log, logged to its W&B run.

Every interval a background thread (never the event loop, never a request) starts
``python -m imgcls.drift.monitor BUNDLE LOG SECONDS`` (:mod:`imgcls.drift.monitor`): a separate process reads
the last window of the SQLite log (rows of the served model only) and scores it against the bundle's drift
reference with the report's code; its summary (drifted columns, the estimated accuracy and its interval) goes
to the W&B run as ``drift/…``. A bundle without a reference is skipped (logged once); a check that fails or
times out logs a warning and the next interval tries again: serving is never affected.
``imgcls_wandb_drift_checks_total{result}`` counts the checks.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 300.0


class DriftMonitor:
    """Checks the prediction log's last window every ``every_s`` seconds from its own thread.

    Args:
        every_s: the interval, and the length of the window checked.
        log_path: the server's SQLite prediction log.
        current: the served model now, as ``(bundle directory, sha256)`` (None while none is loaded).
        sink: receives each summary (``WandbLogger.drift``).
        on_result: called with ``ok``, ``no_rows``, ``no_reference`` or ``failed`` after each check.
    """

    def __init__(
        self,
        *,
        every_s: float,
        log_path: Path,
        current: Callable[[], tuple[str, str] | None],
        sink: Callable[[dict[str, Any]], None],
        on_result: Callable[[str], None] | None = None,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self.every_s = every_s
        self.log_path = Path(log_path)
        self.current = current
        self.sink = sink
        self.on_result = on_result
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._no_reference: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="imgcls-wandb-drift", daemon=True)

    def start(self) -> DriftMonitor:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                result = self.check()
            except Exception:  # never let the thread die: the next interval tries again
                logger.warning("W&B drift check failed", exc_info=True)
                result = "failed"
            if result is not None and self.on_result is not None:
                self.on_result(result)

    def check(self) -> str | None:
        """One check of the last window; the result's name (None: nothing to check)."""
        served = self.current()
        if served is None:
            return None
        bundle_dir, sha256 = served
        if sha256 in self._no_reference:
            return "no_reference"
        cmd = [sys.executable, "-m", "imgcls.drift.monitor", bundle_dir, str(self.log_path), str(self.every_s)]
        # Its own process group: a Ctrl-C to the server's group killed a check in flight, and the server logged
        # the child's KeyboardInterrupt traceback as a failed check while it shut down. stop() kills it.
        proc = self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
        )
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            logger.warning("W&B drift check: no answer within %.0f s; skipped", self.timeout_s)
            return "failed"
        finally:
            self._proc = None
        if self._stop.is_set():
            return None
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else {}
        except ValueError:
            answer = {}
        status = answer.get("status")
        if status == "ok":
            self.sink(answer["summary"])
            summary = answer["summary"]
            logger.info(
                "drift of the last %.0f s (%s rows): %s",
                self.every_s,
                summary.get("sample_sizes", {}).get("current"),
                ", ".join(summary.get("drifted_columns") or []) or "no drifted column",
            )
            return "ok"
        if status == "no_rows":
            return "no_rows"
        if status == "no_reference":
            self._no_reference.add(sha256)
            logger.info("W&B drift checks skip model %s: its bundle has no drift reference", sha256[:12])
            return "no_reference"
        detail = answer.get("message") or err.decode(errors="replace").strip()[-500:] or f"exit {proc.returncode}"
        logger.warning("W&B drift check failed: %s", detail)
        return "failed"
