"""``imgcls train --nproc-per-node N``: the same command relaunched as N workers under ``torch.distributed.run``.

imgcls does not manage processes itself: torchrun's elastic agent starts the workers, gives each its RANK /
WORLD_SIZE / LOCAL_RANK, watches them, stops the others when one fails, and restarts the whole group up to
``--max-restarts`` times (the restarted workers resume from the last checkpoint). A failure that ends the job
comes back as one :class:`~imgcls.errors.ImgclsError` naming the worker, its exit and how to resume. A hung
worker (stopped, deadlocked) is found by the others' collective timeout (``distributed.timeout_s``); the agent
then stops every worker, SIGKILL after its 30 s grace for one that does not answer SIGTERM, so the job ends
within about ``timeout_s`` + 30 s.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imgcls.errors import ImgclsError, UsageError

if TYPE_CHECKING:
    from imgcls.config import RunConfig

logger = logging.getLogger(__name__)

# The launch flags of `imgcls train` (and whether each takes a value): the workers get the command without them.
LAUNCH_FLAGS = {
    "--nproc-per-node": True,
    "--nnodes": True,
    "--node-rank": True,
    "--rdzv-endpoint": True,
    "--max-restarts": True,
    "--print-launch": True,
}


def count(n: int, noun: str) -> str:
    """``1 node``, ``2 nodes``, ``3 processes``: what the launcher and the specs print."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"


@dataclass(frozen=True)
class Launch:
    """How many workers, on how many machines, and how they find each other."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # HOST:PORT of node 0 (needed when nnodes > 1)
    max_restarts: int = 0
    monitor_interval_s: float = 0.5  # how often the agent checks its workers
    join_timeout_s: float = 600.0  # how long the nodes wait for each other (distributed.join_timeout_s)

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1:
            raise UsageError(f"--nproc-per-node must be at least 1, not {self.nproc_per_node}")
        if self.nnodes < 1:
            raise UsageError(f"--nnodes must be at least 1, not {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise UsageError(f"--node-rank {self.node_rank} is not in 0..{self.nnodes - 1} (--nnodes {self.nnodes})")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise UsageError(
                f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT (node 0's address, the same on every node)"
            )
        if self.rdzv_endpoint and not _host_port(self.rdzv_endpoint):
            raise UsageError(
                f"--rdzv-endpoint {self.rdzv_endpoint!r} is not HOST:PORT (a port from 1 to 65535)",
                hint="e.g. 10.0.0.2:29500",
            )
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be 0 or more, not {self.max_restarts}")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self, worker_args: list[str]) -> list[str]:
        """The ``torch.distributed.run`` command line that starts ``python -m imgcls <worker_args>``."""
        args = [
            f"--nproc-per-node={self.nproc_per_node}",
            f"--max-restarts={self.max_restarts}",
            f"--monitor-interval={self.monitor_interval_s}",
        ]
        if self.nnodes == 1 and not self.rdzv_endpoint:
            args.append("--standalone")  # a free port on localhost
        else:
            host, port = _host_port(self.rdzv_endpoint or "") or ("", "")
            args += [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}"]
            args += [f"--master-addr={host}", f"--master-port={port}"]
            # torchrun's static rendezvous waits for the other nodes this long (its own default: 600 s)
            args.append(f"--rdzv-conf=timeout={math.ceil(self.join_timeout_s)}")
        return [*args, "--module", "imgcls", *worker_args]


def _host_port(endpoint: str) -> tuple[str, str] | None:
    """``("10.0.0.2", "29500")`` for ``10.0.0.2:29500`` (``[::1]:29500`` for IPv6); None unless HOST:PORT."""
    host, sep, port = endpoint.rpartition(":")
    return (host, port) if sep and host and port.isdigit() and 1 <= int(port) <= 65535 else None


def preflight(launch: Launch, cfg: RunConfig, resume: Path | None = None) -> None:
    """Refuse, before any worker starts, what every worker would refuse: no GPU for each, SyncBatchNorm on the CPU,
    a model that does not exist, a resume with another number of processes than the run was trained by."""
    from imgcls.runtime.machine import cpu_count
    from imgcls.train.checkpoint import check_world_size, saved_world_size
    from imgcls.train.factory import check_run

    check_run(cfg, gpus=launch.nproc_per_node, world_size=launch.world_size)
    if resume is not None:
        check_world_size(resume, saved_world_size(resume), launch.world_size)
    cores = cpu_count()
    if cfg.train.device == "cpu" and launch.nproc_per_node > cores:  # allowed (a test of 2 ranks on 1 core), but slow
        logger.warning(
            "%s on %s: they take turns on the cores at 1 thread each, which is slower than --nproc-per-node %d "
            "or fewer",
            count(launch.nproc_per_node, "worker"), count(cores, "core"), cores,
        )  # fmt: skip


def worker_args(argv: list[str], out: Path | None) -> list[str]:
    """``argv`` (``train ...``, as typed) without the launch flags, with ``--out`` fixed for every worker.

    A default run directory has a timestamp: the launcher resolves it once so that all workers (and a restarted
    group) use the same one.
    """
    args: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in LAUNCH_FLAGS:
            skip = LAUNCH_FLAGS[name] and "=" not in item
            continue
        args.append(item)
    if out is not None and not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(out)]
    return args


def run_workers(launch: Launch, args: list[str], *, run_dir: Path | None) -> None:
    """Run the workers to the end; ImgclsError (exit 1) when the job failed, naming the worker that did.

    Raises:
        ImgclsError: a worker crashed, was killed, or hit the collective timeout (a hung peer).
    """
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    parsed = torchrun.get_args_parser().parse_args(launch.torchrun_args(args))
    logger.info("torch.distributed.run %s", " ".join(launch.torchrun_args(args)))
    # The workers inherit this environment. Without OMP_NUM_THREADS torchrun sets 1 and prints a four-line banner
    # saying so; the machine's cores shared between the workers is the rule the workers apply to torch anyway.
    from imgcls.runtime.machine import cpu_count

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_count() // launch.nproc_per_node)))
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.rendezvous import RendezvousError

    # The agent's log folder (its workers' error files) is ours, removed after the job: left to torchrun, a
    # /tmp/torchelastic_* folder stayed behind after every launch.
    parsed.log_dir = tempfile.mkdtemp(prefix="imgcls-torchrun-")
    try:
        torchrun.run(parsed)
    except ChildFailedError as exc:  # its failures hold what the error files said: the folder may go
        raise _job_failed(exc, launch, run_dir) from None
    except SignalException as exc:  # SIGTERM/SIGINT to the launcher: the agent stopped the workers
        name = signal.Signals(exc.sigval).name
        raise ImgclsError(
            f"stopped by {name}: the workers were stopped",
            hint=_resume_hint(launch, run_dir, "") or None,
            exit_code=128 + int(exc.sigval),
        ) from None
    except (DistError, RendezvousError) as exc:  # the nodes never met: a node missing, or node 0 unreachable
        raise ImgclsError(
            f"node {launch.node_rank}: the {launch.nnodes} nodes did not all meet at {launch.rdzv_endpoint} within "
            f"{launch.join_timeout_s:g} s ({exc})",
            hint="run the same `imgcls train` command with the same --nnodes and --rdzv-endpoint on every node, "
            "check that node 0's port is reachable from the others, or raise --set distributed.join_timeout_s",
        ) from None
    finally:
        shutil.rmtree(parsed.log_dir, ignore_errors=True)


def _job_failed(exc: object, launch: Launch, run_dir: Path | None) -> ImgclsError:
    failures = getattr(exc, "failures", {}) or {}
    what = []
    from imgcls.train.distributed import PEER_LOST_EXIT, PEER_TIMEOUT_EXIT

    for rank, failure in sorted(failures.items()):
        code = getattr(failure, "exitcode", None)
        how = f"was killed by {failure.signal_name()}" if code is not None and code < 0 else f"exited with {code}"
        if code == PEER_TIMEOUT_EXIT:
            how = "gave up waiting for the others (a collective timed out: a worker hung or was stopped)"
        elif code == PEER_LOST_EXIT:
            how = "lost its connection to a worker that died"
        elif code == -signal.SIGABRT:
            # NCCL's watchdog (TORCH_NCCL_ASYNC_ERROR_HANDLING, default 3) ends the process from its own thread
            # when a collective times out: "terminate called after throwing ... Watchdog caught collective
            # operation timeout", exit -6, before Python can raise PeerTimeout
            how += (
                " (a native abort: on GPUs, NCCL's watchdog ends a worker whose collective waited longer than "
                "distributed.timeout_s, because another worker hung or died)"
            )
        what.append(f"worker rank {rank} (pid {getattr(failure, 'pid', '?')}) {how}")
    summary = "; ".join(what) or "a worker failed"
    restarts = f" after {launch.max_restarts} restart(s)" if launch.max_restarts else ""
    codes = {getattr(f, "exitcode", None) for f in failures.values()}
    if codes == {2}:  # every worker refused the run (a usage or configuration error): resuming would not help
        return ImgclsError(
            f"distributed training did not start{restarts}: {summary}",
            hint="the workers' error and its fix are printed above",
            exit_code=2,
        )
    resume = _resume_hint(launch, run_dir, " (or pass --max-restarts K to restart automatically)")
    hint = f"its error is above; {resume}" if resume else "its error is above; the other workers were stopped"
    return ImgclsError(f"distributed training failed{restarts}: {summary}", hint=hint, exit_code=1)


def _resume_hint(launch: Launch, run_dir: Path | None, more: str) -> str:
    """How to continue from the run's last checkpoint ("" when there is none yet)."""
    from imgcls.train.checkpoint import has_checkpoint

    if run_dir is None or not has_checkpoint(run_dir):
        return ""
    return (
        f"continue from the last checkpoint with `imgcls train --resume {run_dir} --nproc-per-node "
        f"{launch.nproc_per_node}`{more}"
    )
