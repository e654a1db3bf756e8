"""`imgcls sweep` on Optuna: each trial is a verified bundle, the study lives in its storage, the best is reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgcls.errors import ConfigError, UsageError
from imgcls.sweep import Param, run_sweep

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "digits.yaml"
TINY = ["train.epochs=1", "data.img_size=8", "model.width=8", "train.threads=1"]


def test_param_specs_parse_and_bad_ones_name_the_fix():
    assert Param.parse("optim.lr=loguniform:1e-3:1") == Param("optim.lr", "loguniform", 1e-3, 1.0)
    assert Param.parse("train.batch_size=choice:32,64").choices == (32, 64)
    assert Param.parse("augment.hflip=choice:true,false").choices == (True, False)
    assert Param.parse("train.epochs=int:2:5").kind == "int"
    with pytest.raises(ConfigError, match=r"did you mean 'optim\.lr'"):
        Param.parse("optim.lrr=uniform:0.1:1")
    with pytest.raises(ConfigError, match="KEY=KIND:ARGS"):
        Param.parse("optim.lr=normal:0:1")
    with pytest.raises(ConfigError, match="LOW > 0"):
        Param.parse("optim.lr=loguniform:0:1")
    with pytest.raises(ConfigError, match="whole numbers"):
        Param.parse("train.epochs=int:1.5:3")


def test_a_sweep_writes_one_bundle_per_trial_and_a_second_machine_joins_the_study(tmp_path):
    from imgcls.bundle import load_bundle

    params = [Param.parse("optim.lr=loguniform:0.02:0.4")]
    first = run_sweep(CONFIG, params, trials=2, out=tmp_path / "a", overrides=TINY)
    assert [t.number for t in first.trials] == [0, 1]
    assert first.storage == f"sqlite:///{tmp_path / 'a' / 'study.db'}"
    for t in first.trials:
        bundle = load_bundle(t.bundle_dir)  # a normal, verified bundle
        assert bundle.metrics.val_top1 == t.val_top1 and bundle.metrics.test_top1 == t.test_top1
        assert bundle.meta.lineage.config is not None
        assert bundle.meta.lineage.config["optim"]["lr"] == pytest.approx(t.params["optim.lr"])
    assert first.best.val_top1 == max(t.val_top1 for t in first.trials)
    # another machine (here: another out directory) on the same storage continues the same study
    second = run_sweep(CONFIG, params, trials=1, out=tmp_path / "b", storage=first.storage, overrides=TINY)
    assert [t.number for t in second.trials] == [0, 1, 2]
    assert second.trials[2].bundle_dir == tmp_path / "b" / "trial-0002"
    with pytest.raises(UsageError, match="twice"):
        run_sweep(CONFIG, params * 2, trials=1, out=tmp_path / "c")


def test_sweep_cli_reports_the_best_trial_and_how_to_push_it(tmp_path):
    sets = [x for item in TINY for x in ("--set", item)]
    cmd = [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), "--param", "train.batch_size=choice:32,64"]
    proc = subprocess.run(
        [*cmd, "--trials", "1", "--out", str(tmp_path / "s"), *sets],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "best trial 0: val top-1" in proc.stdout
    assert f"imgcls push {tmp_path / 's' / 'trial-0000'}" in proc.stdout
    assert (tmp_path / "s" / "trial-0000" / "bundle.json").is_file()
