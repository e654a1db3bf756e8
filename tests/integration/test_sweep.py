"""`imgcls sweep` on Optuna: each trial is a verified bundle, the study lives in its storage, the best is reported."""

from __future__ import annotations

import json
import os
import platform
import re
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
    for spec in ("optim.lr=choice:[1,2", "optim.lr=choice:{a: 1},2", "train.batch_size=choice:[32],64"):
        with pytest.raises(ConfigError, match="each choice must be a number, a word, true/false or null"):
            Param.parse(spec)  # not YAML's own error, nor a list that Optuna cannot store
    with pytest.raises(ConfigError, match=r"choice lists 0\.1 more than once"):
        Param.parse("optim.lr=choice:0.1,0.2,0.1")
    with pytest.raises(ConfigError, match=r"a choice is empty \(write null"):
        Param.parse("optim.lr=choice:,")  # was "choice lists None more than once"
    with pytest.raises(ConfigError, match=r"'train' is a section; search one of its keys \(train\.") as info:
        Param.parse("train=choice:1,2")  # was "unknown key 'train'; did you mean 'train'?"
    assert "did you mean" not in info.value.message


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
    # with the same --seed, the machine that joins draws values of its own, not the first machine's again ...
    drawn = [t.params["optim.lr"] for t in second.trials]
    assert len(set(drawn)) == 3, drawn
    # ... and a study run again from scratch with that seed draws the same values as the first
    again = run_sweep(CONFIG, params, trials=1, out=tmp_path / "fresh", overrides=TINY)
    assert again.trials[0].params == first.trials[0].params
    # each trial names the machine its bundle is on: the best may be on another one

    assert {t.host for t in second.trials} == {platform.node()}
    assert second.trials[2].where() == str(tmp_path / "b" / "trial-0002")
    assert second.trials[2].where(here="other") == f"{tmp_path / 'b' / 'trial-0002'} (on {platform.node()})"
    with pytest.raises(UsageError, match="twice"):
        run_sweep(CONFIG, params * 2, trials=1, out=tmp_path / "c")
    with pytest.raises(UsageError, match="--seed -1 is out of range"):  # not a storage error, as numpy's was
        run_sweep(CONFIG, params, trials=1, out=tmp_path / "c", seed=-1)
    assert not (tmp_path / "c").exists()


def test_sweep_cli_reports_the_best_trial_and_how_to_push_it(tmp_path):
    sets = [x for item in TINY for x in ("--set", item)]
    cmd = [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), "--param", "train.batch_size=choice:32,64"]
    proc = subprocess.run(
        [*cmd, "--trials", "2", "--out", str(tmp_path / "s"), *sets],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"study digits: 2 trial(s), trial bundles in {tmp_path / 's'}" in proc.stdout
    best = re.search(r"best trial (\d): val top-1", proc.stdout)
    assert best is not None, proc.stdout
    trial_dir = tmp_path / "s" / f"trial-000{best[1]}"
    assert f"imgcls push {trial_dir} --alias candidate" in proc.stdout
    assert (trial_dir / "bundle.json").is_file()
    # each trial loads the same digits, whose val split is smaller than the drift reference asks: said once, not
    # once per trial
    assert proc.stderr.count("has only 160 images (asked for 2000)") == 1, proc.stderr


def test_a_searched_value_the_config_refuses_is_refused_before_any_trial(tmp_path):
    cases = [
        ("optim.name=choice:sgd,bogus", "would try 'bogus'"),
        ("train.batch_size=uniform:32:64", "for whole numbers use int:LO:HI"),  # a float range on an int key
        ("train.batch_size=int:0:64", "would try 0"),
        # a model that does not exist: before, trial N failed with it, after the data had loaded
        ("model.arch=choice:resnet8,resnet188", "would try 'resnet188'.*did you mean 'resnet18'"),
        # a dataset that does not exist: trial N failed with it, after N-1 trials had trained
        ("data.name=choice:digits,fashion_mnist,digitz", "would try 'digitz'.*did you mean 'digits'"),
    ]
    for spec, message in cases:
        with pytest.raises(ConfigError, match=message):
            run_sweep(CONFIG, [Param.parse(spec)], trials=1, out=tmp_path / "s", overrides=TINY)
        assert not (tmp_path / "s").exists()  # no study, no trial directory


def test_a_searched_device_this_machine_lacks_is_refused_before_any_trial(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: every device is there to be searched")
    with pytest.raises(ConfigError, match=r"would try 'cuda'.*CUDA is not available"):
        run_sweep(CONFIG, [Param.parse("train.device=choice:cpu,cuda")], trials=1, out=tmp_path / "s", overrides=TINY)
    assert not (tmp_path / "s").exists()


def test_diverged_trials_are_reported_and_do_not_end_the_sweep(tmp_path):
    from imgcls.errors import DivergedError

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(DivergedError, match=r"every trial of study 'digits' diverged \(1 so far: optim\.lr="):
        run_sweep(CONFIG, [Param.parse("optim.lr=loguniform:1e5:1e6")], trials=1, out=tmp_path / "a",
                  storage=storage, overrides=TINY)  # fmt: skip
    assert not (tmp_path / "a" / "trial-0000" / "bundle.json").exists()
    # the same study goes on (here with a sane range): the diverged trial is listed, the best is a completed one
    result = run_sweep(CONFIG, [Param.parse("optim.lr=loguniform:0.02:0.1")], trials=1, out=tmp_path / "b",
                       storage=storage, overrides=TINY)  # fmt: skip
    diverged, done = result.trials
    assert diverged.number == 0 and diverged.val_top1 is None and diverged.bundle_dir is None
    assert diverged.diverged is not None and "training diverged: the loss is" in diverged.diverged
    assert result.best is done and done.number == 1 and done.val_top1 is not None
    assert (tmp_path / "b" / "trial-0001" / "bundle.json").is_file()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--param", "optim.lr=loguniform:1e5:1e6"], 1, "every trial of study 'digits' diverged"),
        (["--param", "optim.lr=loguniform:0.02:0.1", "--set", "data.name=folder:{tmp}/missing"], 2, "missing"),
    ],
)
def test_a_sweep_that_fails_in_a_trial_says_why_once_without_a_traceback(tmp_path, extra, code, message):
    sets = [x for item in TINY for x in ("--set", item)]
    extra = [x.replace("{tmp}", str(tmp_path)) for x in extra]
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), *extra, "--trials", "1", "--out", str(tmp_path / "s"),
         *sets],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and 'File "' not in proc.stderr  # Optuna's warning keeps one line


def test_an_interrupted_sweep_says_how_to_continue_and_the_study_continues(tmp_path):
    import signal
    import time

    sets = [x for item in [*TINY, "train.epochs=1000"] for x in ("--set", item)]  # never done before the interrupt
    cmd = [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), "--param", "optim.lr=loguniform:0.02:0.1"]
    cmd += ["--trials", "3", "--out", str(tmp_path / "s"), *sets]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job inherits SIGINT ignored
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "s" / "trial-0000" / "metrics.jsonl").exists():  # the first epoch of trial 0 is done
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "error: interrupted" in err and "run the same command again to continue the study" in err
    assert "Traceback" not in err
    again = run_sweep(CONFIG, [Param.parse("optim.lr=loguniform:0.02:0.1")], trials=1, out=tmp_path / "s",
                      overrides=TINY)  # fmt: skip
    assert [t.number for t in again.trials] == [1]  # the interrupted trial 0 failed; the study went on from it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "out=choice:a,b"], "the sweep sets out for every trial"),  # was accepted, and then ignored
        (["--set", "out=/elsewhere"], "the sweep sets out for every trial"),
        (["--study", "../../escape"], "--study '../../escape' cannot name the folder runs/sweep-<study>"),
        (["--study", "a/b"], "cannot name the folder"),
        (["--study", " "], "--study is empty"),
    ],
)
def test_a_sweep_refuses_what_would_put_trials_elsewhere_than_asked(tmp_path, args, message):
    base = ["--param", "optim.lr=loguniform:0.02:0.1"] if args[0] != "--param" else []
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), *base, *args, "--trials", "1"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert list(tmp_path.iterdir()) == []  # no study, no runs/ folder


def test_a_trial_falling_behind_the_others_is_pruned_and_can_still_be_finished(tmp_path):
    import optuna

    from imgcls.bundle import load_bundle
    from imgcls.train import fit

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="digits", storage=storage, direction="maximize")
    for lr in [0.1] * 5 + [1e-6]:  # five that learn, then one that cannot: below their median at epoch 2
        study.enqueue_trial({"optim.lr": lr})
    result = run_sweep(CONFIG, [Param.parse("optim.lr=loguniform:1e-6:0.5")], trials=6, out=tmp_path / "s",
                       storage=storage, overrides=[*TINY, "train.epochs=3"])  # fmt: skip
    *done, pruned = result.trials
    assert [t.val_top1 is not None and t.pruned is None for t in done] == [True] * 5  # 5 finish before any is cut
    assert pruned.number == 5 and pruned.val_top1 is None and pruned.bundle_dir is None and pruned.diverged is None
    assert pruned.pruned is not None and pruned.pruned.startswith("stopped after epoch 2/3 by the median pruner")
    assert result.best in done
    run_dir = tmp_path / "s" / "trial-0005"
    assert pruned.run_dir == run_dir.resolve()  # recorded before it trained, with the machine it trains on
    assert pruned.where() == str(run_dir.resolve())
    assert pruned.where(here="another-machine") == f"{run_dir.resolve()} (on {platform.node()})"
    assert not (run_dir / "bundle.json").exists()
    assert [r["epoch"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    finished = fit(resume=run_dir)  # the pruner may be wrong: the trial's checkpoint finishes it
    assert finished.epochs_run == 3 and load_bundle(run_dir).metrics.val_top1 is not None


def test_the_pruner_is_one_optuna_knows_and_a_bad_name_is_refused(tmp_path):
    import optuna

    from imgcls.sweep import make_pruner

    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(UsageError, match="--pruner 'mean' is not one of median, hyperband, none"):
        run_sweep(CONFIG, [Param.parse("optim.lr=loguniform:0.02:0.1")], trials=1, out=tmp_path / "s",
                  pruner="mean", overrides=TINY)  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_trials_that_log_to_wandb_are_grouped_by_their_study(tmp_path):
    from _wandb_offline import offline_runs

    wandb = ["wandb.enabled=true", "wandb.mode=offline"]
    result = run_sweep(CONFIG, [Param.parse("optim.lr=loguniform:0.02:0.1")], trials=1, out=tmp_path / "s",
                       study="digits-lr", overrides=[*TINY, *wandb])  # fmt: skip
    (run,) = offline_runs(tmp_path / "s" / "trial-0000")
    assert run.group == "digits-lr" and run.config["optim"]["lr"] == pytest.approx(result.trials[0].params["optim.lr"])
    mine = run_sweep(CONFIG, [Param.parse("optim.lr=loguniform:0.02:0.1")], trials=1, out=tmp_path / "t",
                     overrides=[*TINY, *wandb, "wandb.group=mine"])  # fmt: skip
    assert mine.trials[0].bundle_dir is not None
    assert [r.group for r in offline_runs(tmp_path / "t" / "trial-0000")] == ["mine"]  # --set wins


def test_a_refused_sweep_prints_no_banner_before_its_error(tmp_path):
    """The banner ('study digits: 1 trial(s), trial bundles in ...') came before the error of a sweep that never
    started: its values are checked first now."""
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), "--param", "optim.lr=uniform:0.1:0.2", "--param",
         "optim.lr=uniform:0.3:0.4", "--out", str(tmp_path / "s")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "--param names a key twice" in proc.stderr, proc.stderr
    assert "study" not in proc.stdout and not (tmp_path / "s").exists()


def test_a_sweep_into_a_bundle_or_an_interrupted_run_is_refused(tmp_path, random_bundle):
    """--out of a finished bundle was taken: study.db and trial-0000/ were written inside the bundle."""
    r = subprocess.run(
        [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), "--param", "optim.lr=loguniform:0.02:0.4",
         "--trials", "1", "--out", str(random_bundle)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "is a bundle: the sweep's trials would be written inside it" in r.stderr, r.stderr
    assert not (random_bundle / "study.db").exists() and not (random_bundle / "trial-0000").exists()


def test_a_storage_password_is_never_shown(tmp_path):
    secret = "S3cr3t-pw"
    for storage in (f"postgresql://alice:{secret}@127.0.0.1:1/studies", f"nosuchdb://alice:{secret}@db/studies"):
        r = subprocess.run(
            [sys.executable, "-m", "imgcls", "sweep", str(CONFIG), "--param", "optim.lr=loguniform:0.02:0.4",
             "--trials", "1", "--out", str(tmp_path / "out"), "--storage", storage],
            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
        )  # fmt: skip
        assert r.returncode == 2 and "cannot open the Optuna storage" in r.stderr, r.stderr
        assert secret not in r.stdout + r.stderr  # was echoed with the URL in the error
        assert "alice:***@" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "out").exists()  # the sweep never started: no empty --out left behind
    # the line that ends every sweep ("storage: URL (study NAME)") shows the URL this way
    from imgcls.sweep import shown_storage

    assert shown_storage(f"postgresql://alice:{secret}@db:5432/s") == "postgresql://alice:***@db:5432/s"
    assert shown_storage(f"mysql+pymysql://db/s?charset=utf8&password={secret}") == (
        "mysql+pymysql://db/s?charset=utf8&password=***"
    )
    assert shown_storage("sqlite:////runs/sweep/study.db") == "sqlite:////runs/sweep/study.db"
