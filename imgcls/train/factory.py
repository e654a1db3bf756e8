"""What a run is built from: the device check, torch settings and seeds, the data, the model, the optimiser."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from imgcls.config import RunConfig
from imgcls.errors import ConfigError, DeviceError


def check_device(device: str, gpus: int = 1) -> None:
    """DeviceError (exit 2) when CUDA is asked for and not there: never fall back to the CPU silently.

    ``gpus``: how many this machine must have (a process of local rank r uses ``cuda:r``).
    """
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        reason = f"this torch ({torch.__version__}) was built without CUDA" if not built else "no CUDA device found"
        raise DeviceError(
            f"--gpu / train.device=cuda asks for CUDA, but CUDA is not available: {reason}",
            hint="run without --gpu (or --set train.device=cpu) to train on the CPU, "
            "or use a machine with an NVIDIA GPU and a CUDA build of torch",
        )
    found = torch.cuda.device_count()
    if gpus > found:
        raise DeviceError(
            f"{gpus} CUDA processes on this machine need a GPU each (cuda:0 … cuda:{gpus - 1}), but it has {found}",
            hint=f"use --nproc-per-node {found} (one process per GPU)",
        )


def check_run(cfg: RunConfig, *, gpus: int = 1, world_size: int = 1, data_given: bool = False) -> None:
    """What a run of ``cfg`` would refuse once started, checked before anything loads: a dataset imgcls does not
    have, CUDA (and ``gpus`` of it) when asked for, SyncBatchNorm off CUDA in a job of ``world_size`` > 1, a model
    neither imgcls nor timm has.

    One function for every place that checks: ``fit`` before its data, the launcher before its workers, the sweep
    for each searched value before its study.
    """
    from imgcls.data.datasets import check_dataset_name
    from imgcls.models import check_model_name
    from imgcls.train.distributed import check_sync_bn

    if not data_given:  # fit(cfg, dataset=...) trains on arrays in memory: cfg.data.name only names them
        check_dataset_name(cfg.data.name)
    check_device(cfg.train.device, gpus=gpus)
    check_sync_bn(cfg.distributed.sync_bn and world_size > 1, cfg.train.device)
    check_model_name(cfg.model.arch, pretrained=cfg.model.pretrained)


def configure_torch(cfg: RunConfig, processes_per_machine: int = 1) -> int:
    """Threads (CPU) or cuDNN/TF32 settings (CUDA); returns the number of CPU threads torch uses.

    Without ``train.threads``, the machine's cores are shared between the ``processes_per_machine`` processes.
    """
    import torch

    if cfg.train.device == "cpu":
        from imgcls.runtime.machine import cpu_count

        torch.set_num_threads(cfg.train.threads or max(1, cpu_count() // processes_per_machine))
        torch.set_flush_denormal(True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.get_num_threads()


def too_many_threads(cfg: RunConfig, processes_per_machine: int = 1) -> str | None:
    """A warning when ``train.threads`` asks for more threads on this machine's processes than it has cores."""
    from imgcls.runtime.machine import cpu_count

    threads, cores = cfg.train.threads, cpu_count()
    if cfg.train.device != "cpu" or threads is None or threads * processes_per_machine <= cores:
        return None
    each = max(1, cores // processes_per_machine)
    where = f" in each of {processes_per_machine} processes" if processes_per_machine > 1 else ""
    return (
        f"train.threads={threads}{where} on {cores} core{'s' if cores > 1 else ''}: the threads take turns on the "
        f"cores, which is slower than train.threads={each} (unset, it is chosen for you)"
    )


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(cfg: RunConfig, dataset: Any = None) -> Any:
    """``dataset`` or ``cfg.data`` loaded; ConfigError when a split the loop needs is empty."""
    from imgcls.data.datasets import load_dataset

    if dataset is None:
        dataset = load_dataset(cfg.data, seed=cfg.train.seed)
    if len(dataset.train) == 0:
        raise ConfigError(f"dataset {cfg.data.name!r} has no training images")
    if len(dataset.val) == 0 and cfg.data.val_fraction > 0:  # no class had the 2 images it takes to hold one out
        largest = int(np.bincount(dataset.train.labels).max())
        raise ConfigError(
            f"dataset {cfg.data.name!r} has no validation images: data.val_fraction={cfg.data.val_fraction} holds "
            f"out none of its {len(dataset.train)} training images, as there are at most {largest} training "
            f"image{'s' if largest != 1 else ''} per class",
            hint="a class needs 2 or more training images (after the test split) for one to be held out: add "
            "images, or a val/ folder",
        )
    if len(dataset.val) == 0:
        raise ConfigError(
            f"dataset {cfg.data.name!r} has no validation images (data.val_fraction={cfg.data.val_fraction})",
            hint="set data.val_fraction > 0 (e.g. --set data.val_fraction=0.1) or add a val/ folder",
        )
    return dataset


def build_model(cfg: RunConfig, dataset: Any) -> tuple[Any, dict[str, Any]]:
    """The model for ``dataset`` and the spec the bundle records to rebuild it."""
    from imgcls.models import create_model, model_spec

    size = dataset.input.size
    img_size = int(size[0]) if size[0] == size[1] else int(max(size))
    kwargs = {"width": cfg.model.width, "drop_rate": cfg.model.drop_rate or None}
    num_classes = len(dataset.classes)
    model = create_model(
        cfg.model.arch,
        num_classes=num_classes,
        in_chans=dataset.input.channels,
        img_size=img_size,
        pretrained=cfg.model.pretrained,
        small_input_stem=cfg.model.small_input_stem,
        **kwargs,
    )
    if kwargs["width"] is None and isinstance(getattr(model, "width", None), int):
        kwargs["width"] = model.width  # record the effective width: a later default must not change the bundle
    spec = model_spec(
        cfg.model.arch,
        num_classes=num_classes,
        in_chans=dataset.input.channels,
        img_size=img_size,
        small_input_stem=cfg.model.small_input_stem,
        **kwargs,
    )
    return model, spec


def build_optimizer(cfg: RunConfig, model: Any) -> Any:
    """SGD (Nesterov) or AdamW; no weight decay on norm layers and biases (every parameter with ndim <= 1)."""
    import torch

    o = cfg.optim
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused kernels (one launch for all parameters) on CUDA; the CPU keeps the default for-each implementation
    fused = {"fused": True} if cfg.train.device == "cuda" else {}
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.momentum, 0.999), **fused)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, **fused)
