"""Data-parallel training over processes with torch.distributed (NCCL on GPUs, gloo on CPUs).

A process learns its place from a :class:`DistEnv` that the CLI reads from torchrun's environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, TORCHELASTIC_RESTART_COUNT); the core never reads the
environment itself. What each process does:

- it trains on its shard of every global batch: one permutation of the training set per epoch, the same on
  every rank (seeded by the epoch), cut into global batches of ``world_size × batch_size`` images, of which
  rank ``r`` takes the ``r``-th slice (DistributedSampler's order with ``drop_last``, for the in-memory data);
- metrics are summed over ranks (:func:`all_reduce_sum`); evaluation shards the images without padding and
  gathers every logit back into the original order (:func:`gather_rows`), so it is exactly a single-process
  evaluation (timm's padded sampler counts duplicated images);
- only the primary process (rank 0) writes: run directory, checkpoints, bundle, W&B, plots;
- every collective has ``timeout_s``: a dead or hung peer ends the job with an error instead of a hang
  (:class:`PeerTimeout`, exit status :data:`PEER_TIMEOUT_EXIT`; a connection a dead peer closed is
  :class:`PeerLost`, :data:`PEER_LOST_EXIT`: the launcher names both in its message).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from imgcls.errors import ConfigError, ImgclsError

logger = logging.getLogger(__name__)

PEER_TIMEOUT_EXIT = 4
"""A worker's exit status when a collective timed out: the launcher reports "gave up waiting for the others"."""
PEER_LOST_EXIT = 5
"""A worker's exit status when a peer closed its connection (it died): "lost its connection to a worker"."""
_TIMED_OUT = re.compile(r"timed out|timeout", re.IGNORECASE)  # gloo: "Timed out waiting 30000ms for recv …"
# gloo: "Read error [127.0.0.1]:18339: Connection reset by peer", "Connection closed by peer"; NCCL: "remote
# process exited or there was a network error"
_LOST = re.compile(r"connection (reset|closed) by peer|broken pipe|remote process exited", re.IGNORECASE)


class PeerTimeout(ImgclsError):
    """A collective waited longer than ``distributed.timeout_s``: another worker hung, was stopped, or died."""

    exit_code = PEER_TIMEOUT_EXIT
    code = "peer_timeout"
    # gloo's threads are still blocked on the hung peer: at interpreter exit their destructors call
    # std::terminate ("terminate called without an active exception"), and the launcher saw SIGABRT, not this
    # status (seen in two of four runs of the hung-worker test here)
    exit_at_once = True


class PeerLost(ImgclsError):
    """A collective's connection was closed by another worker: it died (killed, out of memory, its own error)."""

    exit_code = PEER_LOST_EXIT
    code = "peer_lost"
    exit_at_once = True  # as for PeerTimeout: the backend's threads may still be blocked


def peer_failure(env: DistEnv, exc: BaseException, timeout_s: float) -> PeerTimeout | PeerLost | None:
    """What ``exc`` (raised by a collective or by DDP's backward) says of the other workers, or None: a
    :class:`PeerTimeout` (none answered in time) or a :class:`PeerLost` (one closed its connection). Either replaces
    the backend's message (a C++ source path, "GLHF! 🏖️") with what happened and what to do."""
    if not env.enabled or not isinstance(exc, RuntimeError):
        return None
    if _TIMED_OUT.search(str(exc)):
        return PeerTimeout(
            f"rank {env.rank}: no answer from the other workers for {timeout_s:g} s (distributed.timeout_s): one "
            "of them hung, was stopped or died",
            hint="if they are only slow (a long evaluation, a slow disk), raise it: --set "
            "distributed.timeout_s=SECONDS",
        )
    if _LOST.search(str(exc)):
        return PeerLost(
            f"rank {env.rank}: another worker closed its connection: it died (killed, out of memory, or its own error)",
            hint="the launcher names the worker that died; its own error, if it had one, is printed above",
        )
    return None


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_count: int = 0  # torchelastic restarts so far: > 0 means resume from the last checkpoint

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DistEnv:
        """Read torchrun's variables (call this at the edge: the CLI); a plain process is rank 0 of 1."""

        def num(key: str, default: int) -> int:
            raw = environ.get(key)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"environment variable {key}={raw!r} is not an integer") from None

        world = num("WORLD_SIZE", 1)
        # torchrun sets all four. A Kubernetes PyTorchJob or a Vertex AI job that runs one process per replica sets
        # only RANK and WORLD_SIZE: that process is alone on its machine, and sharing the cores with WORLD_SIZE - 1
        # processes that are elsewhere left it 1/WORLD_SIZE of them. With a LOCAL_RANK but no LOCAL_WORLD_SIZE,
        # the peers on this machine are unknown: assume they all are, so that no core is oversubscribed.
        local_world = num("LOCAL_WORLD_SIZE", world if "LOCAL_RANK" in environ else 1)
        env = cls(
            rank=num("RANK", 0),
            world_size=world,
            local_rank=num("LOCAL_RANK", 0),
            local_world_size=local_world,
            restart_count=num("TORCHELASTIC_RESTART_COUNT", 0),
        )
        if not 0 <= env.rank < env.world_size or not 0 <= env.local_rank < max(env.local_world_size, 1):
            raise ConfigError(f"inconsistent launcher environment: {env}")
        return env


def lr_scale(rule: str, world_size: int) -> float:
    """The learning-rate multiplier for ``world_size`` processes (the global batch grows with it)."""
    if rule == "linear":
        return float(world_size)
    if rule == "sqrt":
        return math.sqrt(world_size)
    return 1.0


def device_for(device: str, env: DistEnv) -> str:
    """``cuda:<local rank>`` for a CUDA job of several processes, else ``device`` unchanged."""
    return f"cuda:{env.local_rank}" if device == "cuda" and env.enabled else device


def init(env: DistEnv, device: str, timeout_s: float, join_timeout_s: float | None = None) -> Any:
    """Join the process group (NCCL for CUDA, gloo for CPU); MASTER_ADDR/PORT come from the launcher.

    Every rank first waits (up to ``join_timeout_s``, default ``timeout_s``) on the launcher's store until all
    ``world_size`` ranks have arrived; only then is the group formed, with ``timeout_s`` for its connections and
    collectives. Without that barrier a rank that starts late (imports on a loaded machine, a restarted group)
    made the early ones' gloo connect time out after ``timeout_s``.

    Returns:
        The launcher's key-value store (None for one process), for :func:`agree`.
    """
    if not env.enabled:
        return None
    import time

    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
        kwargs["device_id"] = torch.device("cuda", env.local_rank)
    timeout = _dt.timedelta(seconds=timeout_s)
    join_s = max(join_timeout_s or timeout_s, timeout_s)
    try:
        job, _, _ = next(dist.rendezvous("env://", env.rank, env.world_size, timeout=_dt.timedelta(seconds=join_s)))
        # The launcher's store outlives a restart of the worker group: a key prefix per attempt keeps the
        # restarted workers from reading the dead ones' addresses (seen: "Connection refused" on restart).
        store = dist.PrefixStore(f"imgcls/attempt-{env.restart_count}", job)
        arrived = int(store.add("arrived", 1))
        deadline = time.monotonic() + join_s
        while arrived < env.world_size:
            if time.monotonic() > deadline:
                raise ImgclsError(
                    f"rank {env.rank}: only {arrived} of {env.world_size} workers started within {join_s:g} s "
                    "(distributed.join_timeout_s)",
                    hint="check that every node runs the same `imgcls train` command with the same "
                    "--rdzv-endpoint, or raise distributed.join_timeout_s",
                )
            time.sleep(0.05)
            arrived = int(store.add("arrived", 0))
        dist.init_process_group(
            backend=backend, store=store, rank=env.rank, world_size=env.world_size, timeout=timeout, **kwargs
        )
    except (RuntimeError, ValueError) as exc:
        waited = f" within {join_s:g} s" if _TIMED_OUT.search(str(exc)) else ""
        raise ImgclsError(
            f"rank {env.rank} could not join the {backend} process group of {env.world_size}{waited}: {exc}",
            hint="every rank needs MASTER_ADDR and MASTER_PORT naming rank 0's machine, and rank 0 running and "
            "reachable there (`imgcls train --nproc-per-node N`, torchrun and PyTorchJob set them); if rank 0 "
            "starts late, raise --set distributed.join_timeout_s",
        ) from None
    logger.info("rank %d/%d joined (%s)", env.rank, env.world_size, backend)
    return dist.PrefixStore("imgcls/job", job)


def agree(env: DistEnv, store: Any, key: str, propose: Callable[[], str]) -> str:
    """The value of ``key`` that rank 0 proposes, the same on every rank (``propose`` runs on rank 0 only).

    ``store`` is :func:`init`'s: under torchrun it is the launcher's, which outlives a restart of the worker group,
    so a restarted group gets the value the first one agreed on (a job's run directory stays the job's).
    """
    if not env.enabled:
        return propose()
    if env.is_primary and not store.check([key]):
        store.set(key, propose())
    try:
        return bytes(store.get(key)).decode()  # waits until rank 0 has set it (the store's timeout: join_timeout_s)
    except RuntimeError:  # DistStoreError: rank 0 failed or hung before it set the value
        raise PeerTimeout(
            f"rank {env.rank}: rank 0 did not share the job's {key} in time: it failed or hung",
            hint="rank 0's error is in its log; or raise --set distributed.join_timeout_s",
        ) from None


def shutdown(env: DistEnv) -> None:
    if not env.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(env: DistEnv, tensor: Any) -> Any:
    """``tensor`` summed over every rank, in place (a no-op in a one-process job)."""
    if env.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_ok(env: DistEnv, ok: bool, device: str) -> bool:
    """True when ``ok`` holds on every rank: lets a rank that failed a check stop all the others cleanly."""
    if not env.enabled:
        return ok
    import torch

    flag = torch.tensor([0.0 if ok else 1.0], device=device)
    all_reduce_sum(env, flag)
    return float(flag) == 0.0


def broadcast_text(env: DistEnv, text: str, device: str) -> str:
    """Rank 0's ``text`` on every rank (UTF-8 bytes in a tensor: no pickle)."""
    if not env.enabled:
        return text
    import torch
    import torch.distributed as dist

    data = text.encode() if env.is_primary else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buf = torch.zeros(int(size), dtype=torch.uint8, device=device)
    if env.is_primary:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).decode()


def shard(n: int, env: DistEnv) -> range:
    """This rank's indices of ``n`` evaluation items: ``rank, rank + world, ...`` — no padding, no duplicates."""
    return range(env.rank, n, env.world_size)


def gather_rows(env: DistEnv, rows: Any, n: int) -> Any:
    """Reassemble per-rank ``rows`` (rank r holds items ``shard(n)``) into all ``n`` rows in the original order.

    Every rank gets the full ``(n, ...)`` tensor. Shards differ in length by at most one; they are padded for
    the collective and the padding is dropped again, so nothing is counted twice.
    """
    if not env.enabled:
        return rows
    import torch
    import torch.distributed as dist

    longest = -(-n // env.world_size)
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded)
    out = torch.empty((n, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    for r, part in enumerate(parts):
        count = len(range(r, n, env.world_size))
        out[r :: env.world_size] = part[:count]
    return out


def average_buffers(env: DistEnv, model: Any) -> None:
    """Average BatchNorm running statistics (float buffers) over ranks: every rank then holds the same model."""
    if not env.enabled:
        return
    import torch

    for buf in model.buffers():
        if torch.is_floating_point(buf):
            all_reduce_sum(env, buf.data)
            buf.data.div_(env.world_size)


def check_sync_bn(sync_bn: bool, device: str) -> None:
    """ConfigError when SyncBatchNorm is asked for off CUDA (``device``: ``cpu``, ``cuda`` or ``cuda:N``)."""
    if sync_bn and not device.startswith("cuda"):
        raise ConfigError(
            "distributed.sync_bn (--sync-bn) needs CUDA: torch's SyncBatchNorm has no CPU kernel",
            hint="drop --sync-bn on the CPU: running statistics are averaged over the processes every epoch",
        )


def wrap_model(env: DistEnv, model: Any, *, sync_bn: bool, device: str) -> tuple[Any, Any]:
    """(the module to train, the DDP wrapper to call) — the same module twice in a one-process job."""
    if not env.enabled:
        return model, model
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn:
        check_sync_bn(sync_bn, device)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    import inspect

    ids = [env.local_rank] if device.startswith("cuda") else None
    # No buffer broadcast at every forward: each rank keeps its own running statistics and average_buffers()
    # merges them once per epoch (torch >= 2.12 names the option forward_sync_buffers; it still syncs at init).
    name = (
        "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
    )
    options: dict[str, Any] = {name: False}
    return model, DDP(model, device_ids=ids, **options)
