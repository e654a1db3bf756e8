"""Per-epoch training checkpoints for ``--resume``: safetensors for tensors, JSON for everything else. No pickle.

Layout inside the run directory::

    checkpoints/epoch-0003.safetensors   model.*, best.*, optim.<param>.<key>, rng.* tensors
    checkpoints/last.json                scalars, optimiser hyper-parameters, RNG states, history, and the
                                         tensor file's name + sha256

Both are written atomically; ``last.json`` is written last and is the commit point, so a kill at any moment
leaves the previous complete checkpoint in place.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgcls.bundle import sha256_file
from imgcls.errors import UsageError
from imgcls.fsio import atomic_file, atomic_write_json

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.json"
FORMAT = "imgcls.checkpoint/1"


@dataclass
class TrainState:
    """Scalars of the loop that a resume must restore."""

    epoch: int = 0  # finished epochs
    global_step: int = 0
    best_val_top1: float = -1.0
    best_val_loss: float = 1e30
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    elapsed: float = 0.0  # training seconds before this process (resume)
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl records
    wandb_run_id: str | None = None
    dataset_fingerprint: str | None = None  # the data a resume must train on
    world_size: int | None = None  # processes of the job (None: a checkpoint from before it was recorded)


class _StateRecord(BaseModel):
    """``last.json``'s ``state``: what :class:`TrainState` is rebuilt from (checked, as every field is)."""

    model_config = ConfigDict(extra="ignore")

    epoch: int = Field(ge=0)
    global_step: int = Field(ge=0)
    best_val_top1: float
    best_val_loss: float = 1e30
    best_epoch: int = Field(ge=0)
    epochs_without_improvement: int = Field(ge=0)
    elapsed: float = Field(0.0, ge=0)
    wandb_run_id: str | None = None
    dataset_fingerprint: str | None = None
    world_size: int | None = Field(None, ge=1)


class _OptimizerRecord(BaseModel):
    param_groups: list[dict[str, Any]]
    scalars: dict[str, dict[str, Any]] = {}


class _Record(BaseModel):
    """``last.json``: a damaged or hand-edited file is refused with the field at fault, never half-applied."""

    model_config = ConfigDict(extra="ignore")

    tensors: str = Field(pattern=r"^epoch-[0-9]{4,}\.safetensors$")  # a name in checkpoints/, never a path
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    state: _StateRecord
    history: list[dict[str, Any]] = []
    optimizer: _OptimizerRecord
    rng: dict[str, Any] = {}
    config: dict[str, Any]


def _state_tensors(prefix: str, state: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def save_checkpoint(
    run_dir: Path,
    *,
    model: Any,
    best_state: dict[str, Any] | None,
    optimizer: Any,
    state: TrainState,
    config: dict[str, Any],
) -> Path:
    """Write the checkpoint for ``state.epoch`` finished epochs; returns the path of ``last.json``."""
    import torch

    from imgcls.deps import require

    safetensors_torch = require("safetensors.torch", feature="checkpoints")
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    tensors = _state_tensors("model", model.state_dict())
    if best_state is not None:
        tensors.update(_state_tensors("best", best_state))
    opt = optimizer.state_dict()
    optim_scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().to("cpu").clone().contiguous()
            else:
                optim_scalars.setdefault(str(pid), {})[key] = value
    tensors["rng.torch_cpu"] = torch.get_rng_state().clone()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.torch_cuda"] = torch.cuda.get_rng_state().clone()

    name = f"epoch-{state.epoch:04d}.safetensors"
    with atomic_file(ckpt_dir / name) as tmp:
        safetensors_torch.save_file(tensors, str(tmp), metadata={"format": FORMAT})

    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    record = {
        "format": FORMAT,
        "tensors": name,
        "sha256": sha256_file(ckpt_dir / name),
        "state": {
            "epoch": state.epoch,
            "global_step": state.global_step,
            "best_val_top1": state.best_val_top1,
            "best_val_loss": state.best_val_loss,
            "best_epoch": state.best_epoch,
            "epochs_without_improvement": state.epochs_without_improvement,
            "elapsed": state.elapsed,
            "wandb_run_id": state.wandb_run_id,
            "dataset_fingerprint": state.dataset_fingerprint,
            "world_size": state.world_size,
        },
        "history": state.history,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": optim_scalars},
        "rng": {
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]],
        },
        "config": config,
    }
    last = ckpt_dir / LAST
    atomic_write_json(last, record)
    for old in ckpt_dir.glob("epoch-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return last


@dataclass
class CheckpointSaver:
    """Writes a run's per-epoch checkpoint into ``run_dir`` (one place decides what is saved and where).

    Example:
        saver = CheckpointSaver(run_dir, cfg.to_dict())
        saver.save(model=model, best_state=best, optimizer=optimizer, state=state)
    """

    run_dir: Path
    config: dict[str, Any]

    def save(self, *, model: Any, best_state: dict[str, Any] | None, optimizer: Any, state: TrainState) -> Path:
        """Checkpoint for ``state.epoch`` finished epochs; returns the path of ``last.json``."""
        return save_checkpoint(
            self.run_dir, model=model, best_state=best_state, optimizer=optimizer, state=state, config=self.config
        )


@dataclass
class Checkpoint:
    """A loaded checkpoint; apply it with :meth:`restore`."""

    state: TrainState
    config: dict[str, Any]
    tensors: dict[str, Any]
    record: dict[str, Any]
    path: Path | None = None  # the tensor file, for messages

    def model_state(self) -> dict[str, Any]:
        return {k[len("model.") :]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def best_state(self) -> dict[str, Any] | None:
        best = {k[len("best.") :]: v for k, v in self.tensors.items() if k.startswith("best.")}
        return best or None

    def _unfit(self, why: str) -> UsageError:
        return UsageError(
            f"checkpoint {self.path} does not fit this run: {why}",
            hint="it was written by another model or configuration, or edited; start the run again",
        )

    def check_fits(self, model: Any) -> None:
        """UsageError unless the tensors are this model's (every name, every shape) and the RNG state is there.

        ``last.json`` vouches for the tensor file by its sha256, but both may come from elsewhere (another run's
        checkpoint folder copied in, a file rewritten by hand): torch's own errors for that were an "unexpected"
        RuntimeError listing every missing key, or a KeyError.
        """
        import torch

        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in self.model_state().items()}
        if missing := sorted(want.keys() - have.keys()):
            raise self._unfit(f"{len(missing)} of the model's tensors are missing ({', '.join(missing[:3])}, ...)")
        if extra := sorted(have.keys() - want.keys()):
            raise self._unfit(f"{len(extra)} tensors are not the model's ({', '.join(extra[:3])}, ...)")
        for name, shape in want.items():
            if have[name] != shape:
                raise self._unfit(f"{name} has shape {list(have[name])}, the model's is {list(shape)}")
        rng = self.tensors.get("rng.torch_cpu")
        if rng is None or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
            raise self._unfit("its random generator state (rng.torch_cpu) is missing or damaged")

    def restore(self, model: Any, optimizer: Any) -> None:
        """Load model weights, optimiser state and RNG states saved by :func:`save_checkpoint`.

        Raises:
            UsageError: the checkpoint is not this run's (:meth:`check_fits`), or its optimiser state is not.
        """
        import torch

        self.check_fits(model)
        model.load_state_dict(self.model_state())
        opt_record = self.record["optimizer"]
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in self.tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                per_param.setdefault(int(pid), {})[name] = value
        for pid, scalars in opt_record.get("scalars", {}).items():
            per_param.setdefault(int(pid), {}).update(scalars)
        try:
            optimizer.load_state_dict({"state": per_param, "param_groups": opt_record["param_groups"]})
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # torch's "doesn't match the size of ..."
            raise self._unfit(f"the optimiser state does not ({exc})") from None
        torch.set_rng_state(self.tensors["rng.torch_cpu"])
        if "rng.torch_cuda" in self.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.tensors["rng.torch_cuda"])
        rng = self.record.get("rng", {})
        if "numpy" in rng:
            n = rng["numpy"]
            np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
        if "python" in rng:
            p = rng["python"]
            random.setstate((p[0], tuple(p[1]), p[2]))


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / LAST).is_file()


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read ``run_dir``'s last checkpoint; UsageError (exit 2) when there is none or it is damaged."""
    from imgcls.deps import require

    raw, record = _read_last(Path(run_dir))
    last = Path(run_dir) / CHECKPOINT_DIR / LAST
    tensor_path = last.parent / record.tensors
    if not tensor_path.is_file() or sha256_file(tensor_path) != record.sha256:
        raise UsageError(
            f"checkpoint {tensor_path} is missing or does not match {last}",
            hint="the checkpoint is damaged; start the run again",
        )
    safetensors_torch = require("safetensors.torch", feature="--resume")
    from safetensors import SafetensorError

    try:
        # safetensors checks the header before it reads: a declared length over 100 MB, or one past the end of
        # the file, is refused without allocating it
        tensors = safetensors_torch.load_file(str(tensor_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(
            f"checkpoint {tensor_path} is not a readable safetensors file ({exc})",
            hint="the checkpoint is damaged; start the run again",
        ) from None
    state = TrainState(**record.state.model_dump(), history=record.history)
    return Checkpoint(state=state, config=record.config, tensors=tensors, record=raw, path=tensor_path)


def _read_last(run_dir: Path) -> tuple[dict[str, Any], _Record]:
    """``last.json`` as read and as checked; UsageError naming what is missing or damaged."""
    last = run_dir / CHECKPOINT_DIR / LAST
    if last.parent.is_symlink():
        raise UsageError(
            f"cannot resume from {run_dir}: its {CHECKPOINT_DIR} folder is a symbolic link (to "
            f"{last.parent.resolve()}); the resumed run would write its checkpoints there, replacing what it holds",
            hint=f"copy the run with its checkpoints (cp -rL {run_dir} NEW) and resume the copy",
        )
    if not last.is_file():
        if (run_dir / "bundle.json").is_file():
            raise UsageError(
                f"{run_dir} is a finished bundle: there is nothing to resume",
                hint="train a new run with --out, or use the bundle as it is",
            )
        raise UsageError(
            f"cannot resume from {run_dir}: no checkpoint ({CHECKPOINT_DIR}/{LAST}) found there",
            hint="pass the --out directory of an interrupted `imgcls train` run (checkpoints are written per epoch)",
        )
    try:
        raw = json.loads(last.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # '[[[[…' too deep to parse
        raise UsageError(f"checkpoint {last} is unreadable ({exc})", hint="start the run again") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise UsageError(f"checkpoint {last} has unknown format {found!r}", hint="start the run again")
    try:
        return raw, _Record.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "the file"
        raise UsageError(f"checkpoint {last} is damaged: {where}: {err['msg']}", hint="start the run again") from None


def check_world_size(run_dir: Path, saved: int | None, world_size: int) -> None:
    """UsageError unless a run is resumed by as many processes as it was trained by (``saved``; None: unknown).

    Another count would change the global batch, the scaled learning rate and the steps per epoch in mid-run,
    and with them where the schedule stands.
    """
    if saved is None or saved == world_size:
        return
    flag = f" --nproc-per-node {saved}" if saved > 1 else ""
    raise UsageError(
        f"--resume {run_dir}: the run was trained by {_processes(saved)}, not {world_size}; another count would "
        "change its global batch, learning rate and schedule in mid-run",
        hint=f"resume it as it ran: `imgcls train --resume {run_dir}{flag}` (on several machines, the same "
        "--nnodes × --nproc-per-node)",
    )


def _processes(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


def saved_world_size(run_dir: Path) -> int | None:
    """The world size an interrupted run's checkpoint records (reads only ``last.json``; None: not recorded)."""
    return _read_last(Path(run_dir))[1].state.world_size


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The resolved configuration an interrupted run was started with (reads only ``last.json``)."""
    return _read_last(Path(run_dir))[1].config
