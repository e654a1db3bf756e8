"""``imgcls sweep``: hyper-parameter search on Optuna, where every trial is a normal ``imgcls train`` run.

Why Optuna rather than W&B sweeps: it runs with no account and no network (W&B sweeps need the W&B server
to hand out parameters), its storage is any SQLAlchemy URL — a local SQLite file by default, a shared
PostgreSQL/MySQL database when many machines work on one study (each runs the same ``imgcls sweep`` command
with the same ``--storage`` and ``--study``) — and its TPE sampler is seeded, so a sweep is reproducible.

Trials are ranked by **validation** top-1 (choosing by the test split would leak it into the model choice); the
test top-1 of each trial is kept beside it. Each trial writes its own bundle, ``OUT/trial-NNNN/``; the best one is
reported with the ``imgcls push`` command that publishes it. Every searched value is checked against the
configuration before the first trial. A trial that diverges is pruned, not failed: the sweep goes on, and TPE,
which ignores failed trials, ranks pruned ones below the completed ones.

Each trial reports its validation top-1 after every epoch, and the study's pruner (Optuna's median rule by
default, Hyperband, or none) stops one that is falling behind the others at the same epoch. A stopped trial keeps
its checkpoints, so ``imgcls train --resume OUT/trial-NNNN`` finishes it when the pruner was wrong.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.errors import ConfigError, DataError, DeviceError, DivergedError, ImgclsError, UsageError
from imgcls.train.callbacks import Callback, EpochEnd

logger = logging.getLogger(__name__)

KINDS = ("uniform", "loguniform", "int", "choice")
OBJECTIVE = "val_top1"
PRUNERS = ("median", "hyperband", "none")
# The median rule waits for this many finished trials (Optuna's default), and never stops a trial at its first
# epoch: under warm-up every learning rate looks alike there.
MEDIAN_STARTUP_TRIALS = 5


@dataclass(frozen=True)
class Param:
    """One searched config key: ``optim.lr=loguniform:1e-3:1``, ``train.batch_size=choice:64,128``."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Param:
        """Parse ``KEY=KIND:ARGS``; ConfigError naming the fix on a bad spec or an unknown key."""
        import yaml

        from imgcls.config import closest_key, config_keys

        example = "e.g. --param optim.lr=loguniform:1e-3:1 or --param train.batch_size=choice:64,128"
        key, sep, spec = text.partition("=")
        kind, _, args = spec.partition(":")
        key = key.strip()
        if not sep or not key or kind not in KINDS or not args:
            raise ConfigError(
                f"--param {text!r} is not KEY=KIND:ARGS with KIND one of {', '.join(KINDS)}", hint=example
            )
        if key == "out":
            raise ConfigError(
                f"--param {text!r}: the sweep sets out for every trial (OUT/trial-NNNN)", hint="choose OUT with --out"
            )
        if key not in config_keys():
            inside = sorted(k for k in config_keys() if k.startswith(key + "."))
            if inside:  # a section ('train'): closest_key named it back ("did you mean 'train'?")
                raise ConfigError(
                    f"--param {text!r}: {key!r} is a section; search one of its keys ({', '.join(inside[:4])}, …)",
                    hint=example,
                )
            near = closest_key(key)
            raise ConfigError(
                f"--param {text!r}: unknown key {key!r}" + (f"; did you mean '{near}'?" if near else ""),
                hint=example,
            )
        if kind == "choice":
            if any(not v.strip() for v in args.split(",")):  # 'choice:,' listed None twice
                raise ConfigError(f"--param {text!r}: a choice is empty (write null for no value)", hint=example)
            try:
                values: tuple[Any, ...] = tuple(yaml.safe_load(v) for v in args.split(","))
            except yaml.YAMLError:  # "[1": refused below with the same words as a list
                values = ([],)
            # Optuna stores a choice as one of these (a list or a mapping cannot be a trial's value)
            if not all(v is None or isinstance(v, bool | int | float | str) for v in values):
                raise ConfigError(
                    f"--param {text!r}: each choice must be a number, a word, true/false or null, separated by commas",
                    hint=example,
                )
            if len(values) < 2:
                raise ConfigError(f"--param {text!r}: choice needs at least two values", hint=example)
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:
                raise ConfigError(f"--param {text!r}: choice lists {', '.join(twice)} more than once", hint=example)
            return cls(key, kind, choices=values)
        lo, _, hi = args.partition(":")
        try:
            low, high = float(lo), float(hi)
        except ValueError:
            raise ConfigError(f"--param {text!r}: {kind} needs LOW:HIGH numbers", hint=example) from None
        if not low < high or (kind == "loguniform" and low <= 0) or not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(f"--param {text!r}: need LOW < HIGH (and LOW > 0 for loguniform)", hint=example)
        if kind == "int" and (low != int(low) or high != int(high)):
            raise ConfigError(f"--param {text!r}: int bounds must be whole numbers", hint=example)
        return cls(key, kind, low, high)

    def probes(self) -> tuple[Any, ...]:
        """Values whose validity stands for the whole range: every choice; the bounds, and for a float range the
        float just above LOW (not whole: refused where the key takes whole numbers, so use ``int:``)."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "int":
            return int(self.low), int(self.high)
        return self.low, math.nextafter(self.low, self.high), self.high

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")


@dataclass
class TrialResult:
    number: int
    params: dict[str, Any]
    val_top1: float | None  # None: the trial diverged or was pruned
    test_top1: float | None
    bundle_dir: Path | None
    run_dir: Path | None = None  # where it trained: a pruned or diverged trial's checkpoints are there
    diverged: str | None = None  # why (the loss and where), for a trial whose training diverged
    pruned: str | None = None  # when and why the pruner stopped it (its run directory keeps the checkpoints)
    host: str | None = None  # the machine that ran it, where its bundle is (a study may span many)

    def elsewhere(self, here: str | None = None) -> str | None:
        """The machine the bundle is on, when that is not ``here`` (default: this machine); else None."""
        here = platform.node() if here is None else here
        return self.host if self.host and self.host != here else None

    def where(self, here: str | None = None) -> str:
        """The bundle's path (the run directory's for a trial without one), with the machine it is on when that is
        another one."""
        host = self.elsewhere(here)
        return f"{self.bundle_dir or self.run_dir}" + (f" (on {host})" if host else "")

    def describe_params(self, sep: str = "  ") -> str:
        """``optim.lr=0.0123  train.batch_size=64``: the trial's values, floats to 4 significant digits."""
        return sep.join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())


def shown_storage(url: str) -> str:
    """The storage URL as messages and logs may show it: a password in it (``postgresql://user:PW@host/db``,
    ``...?password=PW``) is ``***``. The URL of a shared study's database is printed at the end of every sweep
    and in its errors, which end up in CI logs and terminals shared on a screen."""
    import re

    head, sep, rest = url.partition("://")
    if not sep:
        return url
    query = ""
    if "?" in rest:
        rest, query = rest.split("?", 1)
        query = "?" + re.sub(r"(?i)((?:^|&)(?:password|passwd|pwd)=)[^&]*", r"\1***", query)
    user, at, host = rest.rpartition("@")  # the last '@': a password may hold one
    if at and ":" in user:
        rest = f"{user.split(':', 1)[0]}:***@{host}"
    return f"{head}://{rest}{query}"


def _secrets_of(url: str) -> list[str]:
    """The password(s) a storage URL carries, as written and decoded (to scrub them from a driver's message)."""
    from urllib.parse import parse_qsl, unquote

    _, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    user, at, _ = rest.rpartition("@")
    found = [user.split(":", 1)[1]] if at and ":" in user else []
    found += [v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() in ("password", "passwd", "pwd")]
    return [x for s in found for x in {s, unquote(s)} if x]


def make_pruner(name: str) -> Any:
    """The Optuna pruner called ``name`` (one of :data:`PRUNERS`); the step it sees is the epoch."""
    import optuna

    if name == "median":
        # the earliest prunable step is n_warmup_steps; the steps reported are epochs counted from 1
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"--pruner {name!r} is not one of {', '.join(PRUNERS)}", hint="e.g. --pruner median")


def trial_seeded_sampler(seed: int) -> Any:
    """Optuna's TPE sampler, whose random draws for trial N come from ``(seed, N)``.

    One ``TPESampler(seed=seed)`` per process draws the same sequence in every process: two machines (or two
    commands, one per GPU) joining a study with the same ``--seed`` tried the same values, trial for trial.
    Seeded by the trial's number, unique in the study, each trial draws its own values, and a sweep run again
    from scratch draws the same ones.
    """
    import numpy as np
    import optuna

    class TrialSeededTPESampler(optuna.samplers.TPESampler):
        def before_trial(self, study: Any, trial: Any) -> None:
            state = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
            # the two generators TPESampler draws from (its own; its random sampler's, for the first trials)
            self._rng.rng.seed(state)
            self._random_sampler._rng.rng.seed(state)
            super().before_trial(study, trial)

    return TrialSeededTPESampler(seed=seed)


class _Pruning(Callback):
    """A training callback: report each epoch's validation top-1 to the trial, and stop the trial (raise Optuna's
    ``TrialPruned`` from the loop) when the study's pruner says it is falling behind. The epoch's checkpoint is
    already written, so the trial can still be finished with ``imgcls train --resume``."""

    def __init__(self, trial: Any, pruner: str) -> None:
        self.trial, self.pruner = trial, pruner

    def on_epoch_end(self, epoch: EpochEnd) -> None:
        import optuna

        self.trial.report(epoch.val_top1, epoch.epoch)
        if epoch.epoch < epoch.epochs and not epoch.stopping and self.trial.should_prune():
            why = (
                f"stopped after epoch {epoch.epoch}/{epoch.epochs} by the {self.pruner} pruner: "
                f"val top-1 {epoch.val_top1:.4f}"
            )
            self.trial.set_user_attr("pruned", why)
            raise optuna.TrialPruned(why)


@dataclass
class SweepResult:
    study: str
    storage: str
    trials: list[TrialResult]  # every finished trial of the study (also those other machines ran)
    best: TrialResult


def run_sweep(
    config: Path,
    params: list[Param],
    *,
    trials: int,
    out: Path,
    storage: str | None = None,
    study: str | None = None,
    overrides: list[str] | None = None,
    seed: int = 0,
    pruner: str = "median",
    callbacks_for_trial: Any = None,
    on_start: Callable[[], Any] | None = None,
) -> SweepResult:
    """Run ``trials`` more trials of the study (created on first use) and return all of its finished trials.

    Args:
        config: the base YAML run configuration; each trial is it + ``overrides`` + the trial's parameters.
        params: the searched keys.
        trials: trials this call runs (others may run concurrently elsewhere on the same storage).
        out: each trial's bundle goes to ``out/trial-NNNN``; the default storage is ``out/study.db``.
        storage: an SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://...``) shared by every machine.
        study: the study name (default: the config file's stem).
        pruner: ``median`` (stop a trial whose validation top-1 is below the median of the finished trials' at
            the same epoch, once 5 have finished), ``hyperband`` or ``none``.
        callbacks_for_trial: ``f(number) -> list[Callback]`` for progress display.
        on_start: called once everything is checked and the study is open, before the first trial.

    Example:
        result = run_sweep(Path("configs/digits.yaml"), [Param.parse("optim.lr=loguniform:0.01:0.5")],
                           trials=8, out=Path("runs/sweep"))
        print(result.best.bundle_dir, result.best.val_top1)
    """
    from imgcls.deps import require

    optuna = require("optuna", feature="imgcls sweep")
    from imgcls.config import load_config, override_text
    from imgcls.train import fit
    from imgcls.train.factory import check_run

    if trials < 1:
        raise UsageError(f"--trials must be at least 1, not {trials}")
    if not 0 <= seed < 2**32:  # numpy's bounds for a seed
        raise UsageError(f"--seed {seed} is out of range", hint=f"use a whole number from 0 to {2**32 - 1}")
    pruning = make_pruner(pruner)
    if not params:
        raise UsageError("imgcls sweep needs at least one --param", hint="e.g. --param optim.lr=loguniform:1e-3:1")
    if any(o.partition("=")[0].strip() == "out" for o in overrides or []):
        raise UsageError("--set out=...: the sweep sets out for every trial (OUT/trial-NNNN)", hint="use --out OUT")
    keys = [p.key for p in params]
    if len(set(keys)) != len(keys):
        raise UsageError(f"--param names a key twice: {', '.join(sorted(k for k in keys if keys.count(k) > 1))}")
    base = load_config(config, overrides or [])  # a bad base config fails before the study is created
    check_run(base)
    for p in params:  # ... and so does a searched value the config would refuse (not trial N, hours later)
        for value in p.probes():
            try:
                probe = load_config(config, [*(overrides or []), override_text(p.key, value)])
                check_run(probe)
            except (ConfigError, DataError, DeviceError) as exc:
                raise ConfigError(
                    f"--param {p.key} ({p.kind}) would try {value!r}, which the configuration refuses: {exc.message}",
                    hint="narrow the range or fix the choices"
                    + ("; for whole numbers use int:LO:HI" if p.kind in ("uniform", "loguniform") else ""),
                ) from None
    out = Path(out).resolve()
    made = [p for p in (out, *out.parents) if not p.exists()]  # removed again if the storage cannot be opened
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out / 'study.db'}"
    name = study or Path(config).stem
    try:
        s = optuna.create_study(
            study_name=name,
            storage=storage,
            load_if_exists=True,
            direction="maximize",
            sampler=trial_seeded_sampler(seed),
            pruner=pruning,
        )
    except Exception as exc:  # SQLAlchemy's errors (bad URL, unreachable server, missing driver)
        why = str(exc).split("\n")[0]  # SQLAlchemy adds the SQL and a link on lines of their own
        for secret in _secrets_of(storage):  # a driver may quote the URL it was given
            why = why.replace(secret, "***")
        for folder in made:  # nothing left behind by a sweep that never started (the first is the deepest)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty
        raise UsageError(
            f"cannot open the Optuna storage {shown_storage(storage)!r}: {why}", hint="check --storage"
        ) from None

    def objective(trial: Any) -> float:
        values = {p.key: p.suggest(trial) for p in params}
        trial_out = out / f"trial-{trial.number:04d}"
        # the study is the W&B group of its trials (when they log to W&B), unless --set wandb.group=... says otherwise
        sets = [override_text("wandb.group", name), *(overrides or [])]
        sets += [override_text(k, v) for k, v in values.items()]
        cfg = load_config(config, sets, {"out": str(trial_out)})
        cbs = [*(callbacks_for_trial(trial.number) if callbacks_for_trial else []), _Pruning(trial, pruner)]
        # recorded before it trains: a trial pruned or diverged on any machine of the study says where it is
        trial.set_user_attr("host", platform.node())
        trial.set_user_attr("run_dir", str(trial_out.resolve()))
        try:
            result = fit(cfg, callbacks=cbs)
        except DivergedError as exc:
            # A learning rate too high for the model is a result, not a failure of the sweep: the trial is
            # pruned, which TPE ranks below every completed trial (it ignores failed ones), so it learns to
            # avoid the region. Its run directory keeps the checkpoints, no bundle.
            trial.set_user_attr("diverged", exc.message)
            raise optuna.TrialPruned(exc.message) from None
        trial.set_user_attr("bundle_dir", str(result.bundle_dir))
        trial.set_user_attr("test_top1", result.metrics.get("test_top1"))
        trial.set_user_attr("eval_split", result.metrics.get("eval_split"))
        return float(result.metrics[OBJECTIVE])

    if on_start is not None:  # everything was checked and the study is open: the trials start now
        on_start()
    s.optimize(objective, n_trials=trials, catch=())
    state = optuna.trial.TrialState
    results = [
        TrialResult(
            number=t.number,
            params=dict(t.params),
            val_top1=float(t.value) if t.state == state.COMPLETE else None,
            test_top1=t.user_attrs.get("test_top1"),
            bundle_dir=Path(t.user_attrs["bundle_dir"]) if t.user_attrs.get("bundle_dir") else None,
            run_dir=Path(t.user_attrs["run_dir"]) if t.user_attrs.get("run_dir") else None,
            diverged=t.user_attrs.get("diverged"),
            pruned=t.user_attrs.get("pruned"),
            host=t.user_attrs.get("host"),
        )
        for t in s.trials
        if t.state == state.COMPLETE or (t.state == state.PRUNED and t.user_attrs.keys() & {"diverged", "pruned"})
    ]
    scored = [(r.val_top1, -r.number, r) for r in results if r.val_top1 is not None]
    if not scored:
        diverged = [r for r in results if r.diverged]
        if len(diverged) < len(results):  # Hyperband may stop trials before any has finished
            raise ImgclsError(
                f"no trial of study {name!r} has finished: {len(diverged)} diverged, "
                f"{len(results) - len(diverged)} stopped by the {pruner} pruner",
                hint="run more trials, or --pruner none",
            )
        tried = "; ".join(r.describe_params(", ") for r in results[-5:])
        raise DivergedError(
            f"every trial of study {name!r} diverged ({len(results)} so far: {tried}); the last: "
            f"{results[-1].diverged}",
            hint="lower the searched learning rates (the HIGH of --param optim.lr=...) or clip gradients "
            "(--set optim.grad_clip=1.0)",
        )
    best = max(scored, key=lambda x: x[:2])[2]
    return SweepResult(study=name, storage=storage, trials=results, best=best)
