"""`imgcls train` killed after its first epoch resumes from the checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--config", str(ROOT / "configs" / "digits.yaml"), "--img-size", "8", "--epochs", "4", "--batch-size", "64",
    "--set", "model.width=8", "--seed", "1",
]  # fmt: skip
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgcls", "train", *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kill_after_first_epoch(out: Path, cwd: Path) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgcls", "train", *ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env=ENV,
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("epoch 1/4 ") and "train loss" in line:  # the end-of-epoch line
                proc.send_signal(signal.SIGKILL)  # no chance to clean up, as with a crash or an OOM kill
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return seen


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("resume")
    full = _train(*ARGS, "--out", str(work / "full"), cwd=work)
    assert full.returncode == 0, full.stderr
    _kill_after_first_epoch(work / "killed", work)
    return {"work": work, "full": work / "full", "killed": work / "killed"}


def test_killed_run_leaves_a_checkpoint_and_no_bundle(runs):
    from imgcls.bundle import load_bundle
    from imgcls.errors import BundleError

    killed = runs["killed"]
    assert (killed / "checkpoints" / "last.json").is_file()
    assert not (killed / "bundle.json").exists()
    with pytest.raises(BundleError, match=r"bundle\.json is missing"):
        load_bundle(killed)
    record = json.loads((killed / "checkpoints" / "last.json").read_text())
    assert record["state"]["epoch"] >= 1 and "sha256" in record
    # a new run may not silently overwrite it
    proc = _train(*ARGS, "--out", str(killed), cwd=runs["work"])
    assert proc.returncode == 2 and "--resume" in proc.stderr
    # --resume takes the saved configuration: other options are refused, not silently ignored
    proc = _train("--resume", str(killed), "--epochs", "9", cwd=runs["work"])
    assert proc.returncode == 2 and "--epochs" in proc.stderr


def _header_bomb(data: bytes) -> bytes:
    return struct.pack("<Q", 2**62) + data[8:]  # the header's declared length: 4 EiB


def _other_models_tensors(data: bytes) -> bytes:
    from safetensors.torch import load, save

    tensors = load(data)
    tensors["model.features.0.0.weight"] = tensors["model.features.0.0.weight"][:4].clone()  # a narrower stem
    return save(tensors, metadata={"format": "imgcls.checkpoint/1"})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_header_bomb, "is not a readable safetensors file (Error while deserializing header: header too large)"),
        (lambda data: data[: len(data) // 2], "is not a readable safetensors file"),
        (_other_models_tensors, "does not fit this run: features.0.0.weight has shape [4, "),
    ],
    ids=["header-length-bomb", "truncated", "another-models-tensors"],
)
def test_resume_refuses_a_checkpoint_whose_tensors_are_damaged_or_another_models(runs, tmp_path, damage, message):
    # last.json vouches for the tensor file by its sha256: here both were rewritten (a copied-in checkpoint
    # folder, a hand edit), so only the file itself can tell
    run = tmp_path / "run"
    shutil.copytree(runs["killed"], run)
    last = run / "checkpoints" / "last.json"
    record = json.loads(last.read_text())
    tensors = run / "checkpoints" / record["tensors"]
    tensors.write_bytes(damage(tensors.read_bytes()))
    record["sha256"] = _sha(tensors)
    last.write_text(json.dumps(record))
    before = {p: _sha(p) for p in run.rglob("*") if p.is_file()}
    proc = _train("--resume", str(run), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # was 1: an unexpected SafetensorError, or torch's RuntimeError
    assert f"checkpoint {tensors} {message}" in proc.stderr and "start the run again" in proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr
    assert {p: _sha(p) for p in run.rglob("*") if p.is_file()} == before  # nothing written, nothing lost


def test_resume_refuses_a_checkpoint_folder_that_is_a_link_to_another_runs(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["killed"], other)
    run = tmp_path / "run"
    shutil.copytree(runs["killed"], run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "checkpoints").symlink_to(other / "checkpoints")
    before = {p: _sha(p) for p in other.rglob("*") if p.is_file()}
    proc = _train("--resume", str(run), cwd=tmp_path)
    # it trained on, wrote its checkpoints into the other run's folder (deleting that run's epoch file) and
    # finished; the other run could no longer resume from where it was
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"its checkpoints folder is a symbolic link (to {other / 'checkpoints'})" in proc.stderr
    assert "cp -rL" in proc.stderr and "Traceback" not in proc.stderr
    assert {p: _sha(p) for p in other.rglob("*") if p.is_file()} == before


def test_resume_finishes_with_the_same_result_as_an_uninterrupted_run(runs):
    killed, full = runs["killed"], runs["full"]
    done = json.loads((killed / "checkpoints" / "last.json").read_text())["state"]["epoch"]
    proc = _train("--resume", str(killed), cwd=runs["work"])
    assert proc.returncode == 0, proc.stderr
    assert f"resuming after epoch {done}/4" in proc.stdout

    from imgcls.bundle import load_bundle

    resumed, reference = load_bundle(killed), load_bundle(full)
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert not (killed / "checkpoints").exists()
    # Data order, augmentation, optimiser and RNG state all continue exactly: the same weights, bit for bit.
    assert _sha(killed / "weights.safetensors") == _sha(full / "weights.safetensors")
    assert resumed.metrics == reference.metrics


@pytest.mark.parametrize(
    ("sig", "launch", "code", "message"),
    [
        (signal.SIGINT, [], 130, "error: interrupted"),
        # a pod evicted, a job cancelled: it was a silent death (one process) or an "unexpected SignalException"
        # (the launcher)
        (signal.SIGTERM, [], 143, "error: stopped by SIGTERM"),
        (signal.SIGTERM, ["--nproc-per-node", "2"], 143, "error: stopped by SIGTERM: the workers were stopped"),
    ],
    ids=["ctrl-c", "sigterm", "sigterm-launcher"],
)
def test_a_signal_after_an_epoch_says_how_to_resume(tmp_path, sig, launch, code, message):
    # So many epochs that no machine can finish them before the signal lands; the signal comes right after
    # epoch 1, so the run stays short on every machine.
    args = [*ARGS[: ARGS.index("--epochs") + 1], "1000", *ARGS[ARGS.index("--epochs") + 2 :]]
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgcls", "train", *args, *launch, "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=ENV,
        # A job started in the background by a non-interactive shell (CI) inherits SIGINT as ignored, and Python
        # then installs no KeyboardInterrupt handler: give the child the default a user's terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("epoch 1/1000 ") and "train loss" in line:
            proc.send_signal(sig)  # to imgcls itself: the launcher, when there is one
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    resume = f"imgcls train --resume {tmp_path / 'run'}" + (" --nproc-per-node 2" if launch else "")
    assert message in err and resume in err
    assert "Traceback" not in err and "unexpected" not in err
