"""Typed run configuration: YAML (``yaml.safe_load``) -> pydantic models -> function arguments.

Precedence, lowest to highest: model defaults < ``--config`` YAML < ``--set key.sub=value`` < CLI flags.
Unknown keys and bad values raise :class:`~imgcls.errors.ConfigError` naming the key and the closest valid one.
"""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from imgcls.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
"""The largest config file read: a run configuration is a few sections of keys (the shipped ones are < 2 KB)."""
MAX_CONFIG_NODES = 10_000
"""The most values (keys, items, scalars) a config may expand to: YAML aliases (``*a``) repeat what an anchor
(``&a``) holds, so a few hundred bytes can expand to billions ("billion laughs"); a run config has ~70."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # no inf or nan anywhere

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse true/false where a number is meant: pydantic would take True for 1, and YAML reads yes, no, on
        and off as booleans (``--set train.epochs=yes`` trained one epoch, ``optim.momentum=no`` none)."""
        if isinstance(value, bool) and info.field_name is not None:
            import typing

            annotation = cls.model_fields[info.field_name].annotation
            kinds = typing.get_args(annotation) or (annotation,)
            numbers = [k for k in kinds if k in (int, float)] + [
                k for k in kinds if typing.get_origin(k) is Literal and all(type(a) is int for a in typing.get_args(k))
            ]
            if bool not in kinds and numbers:
                raise ValueError("true/false, not a number (YAML reads yes, no, on and off as true/false)")
        return value


class DataConfig(_Strict):
    name: str = "digits"
    """Dataset: cifar10, cifar100, mnist, fashion-mnist, digits or folder:PATH."""
    dir: Path | None = None
    """Where datasets live / are downloaded (default: ~/.cache/imgcls/data)."""
    img_size: int | None = Field(default=None, ge=8, le=1024)
    """Model input size in pixels (square); default: the dataset's native size."""
    channels: Literal[1, 3] | None = None
    """Input channels; default: the dataset's own (1 for grayscale sets, 3 for colour)."""
    val_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    """Share of the training images held out for validation when the dataset has no validation split."""
    test_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    """Share held out for the test split when a folder has no test/ (and for digits)."""
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] = "bilinear"
    max_pixels: int = Field(default=40_000_000, ge=1)
    """A folder dataset's images above this many pixels (width × height) are skipped: decompression bombs, and the
    memory of a decode (``imgcls predict --max-pixels`` has the same default). Raise it for photos of 45 MP and up."""
    download: bool = True
    """Download torchvision datasets when missing (needs network)."""


class ModelConfig(_Strict):
    arch: str = "resnet8"
    """A model registered by imgcls (resnet8, ...) or any timm name (resnet18, efficientnet_b0, ...)."""
    pretrained: bool = False
    """Start from timm's pretrained weights (needs network)."""
    drop_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    small_input_stem: bool | None = None
    """3×3 stride-1 stem and no max-pool; default: on for inputs ≤ 64 px."""
    width: int | None = Field(default=None, ge=4, le=1024)
    """Base width of imgcls' own small networks."""
    whiten_stem: bool = False
    """Initialise the first convolution as a patch-whitening filter bank of the training images (airbench)."""


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0.0)
    """Peak learning rate (after warm-up)."""
    weight_decay: float = Field(default=5e-4, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_epochs: float = Field(default=1.0, ge=0.0)
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(default=None, gt=0.0)
    """Clip the global gradient norm to this value."""


class AugmentConfig(_Strict):
    crop_padding: int = Field(default=4, ge=0, le=1024)
    """Random-crop padding in pixels (0 disables random crop); at most the largest input size (a shift past the
    image's side leaves nothing of it in view). Its memory is the batch's whatever the padding (the crop reads a
    one-pixel zero border, it does not pad the batch by this much)."""
    hflip: bool = True
    trivial_augment: bool = False
    mixup_alpha: float = Field(default=0.0, ge=0.0)
    cutmix_alpha: float = Field(default=0.0, ge=0.0)


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1, le=1_000_000)
    """Training epochs (a bound that no run reaches: a number past it failed only once the data had loaded)."""
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=512, ge=1)
    seed: int = Field(default=0, ge=0, le=2**64 - 1)
    """Seeds the split, the shuffle, the augmentation and the initial weights (numpy refuses a negative seed, torch
    one past 2**64 - 1)."""
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "bf16"] = "bf16"
    """Autocast precision on CUDA (CPU training always runs fp32)."""
    channels_last: bool = True
    compile: bool = False
    """torch.compile the model (CUDA)."""
    early_stopping_patience: int | None = Field(default=None, ge=1)
    """Stop when validation top-1 has not improved for this many epochs."""
    threads: int | None = Field(default=None, ge=1)
    """CPU threads (default: all cores)."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimiser steps (smoke tests)."""
    sync_every: int | None = Field(default=None, ge=1)
    """Read the loss back to the host every this many steps (progress, divergence check); default 1 on the CPU,
    25 on CUDA, where every read waits for the GPU."""
    flip_tta: bool = False
    """Also report the final evaluation with horizontal-flip test-time augmentation (``*_top1_flip_tta``; the
    exported model itself predicts without it)."""


class DistributedConfig(_Strict):
    """Multi-process training (``imgcls train --nproc-per-node N`` or an external torchrun launcher)."""

    lr_scaling: Literal["none", "linear", "sqrt"] = "linear"
    """How the learning rate follows the global batch: lr × (world size) for linear, × sqrt(world size) for sqrt.
    ``train.batch_size`` is per process; ``optim.lr`` is the learning rate of one process at that batch."""
    sync_bn: bool = False
    """SyncBatchNorm (batch statistics over all processes); otherwise running statistics are averaged per epoch."""
    timeout_s: float = Field(default=300.0, gt=0.0)
    """A collective that waits longer than this (a hung or dead peer) ends the job with an error."""
    join_timeout_s: float = Field(default=600.0, gt=0.0)
    """How long a worker waits for all the others to start (imports and data on a loaded machine, a late node)
    before the job fails; the group is then formed at once, so its connections only need ``timeout_s``."""


class WandbConfig(_Strict):
    enabled: bool = False
    mode: Literal["online", "offline"] = "offline"
    project: str = "imgcls"
    entity: str | None = None
    group: str | None = None
    """W&B run group; ``imgcls sweep`` puts every trial in its study's group."""


class RunConfig(_Strict):
    name: str | None = None
    """Bundle name (default: <data>-<arch>)."""
    out: Path | None = None
    """Bundle directory (default: runs/<data>-<arch>-<timestamp>)."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    distributed: DistributedConfig = DistributedConfig()
    wandb: WandbConfig = WandbConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", v):
            raise ValueError("must match [a-z0-9][a-z0-9._-]{0,63}")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_all_keys(ann, key + "."))
        else:
            keys.append(key)
    return keys


def config_leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config tree (``RunConfig.to_dict()``) as ``{"optim.lr": 0.1, ...}``: every leaf under its dotted key."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            leaves.update(config_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def config_keys() -> list[str]:
    """Every settable key of a run configuration, dotted (``optim.lr``, ``train.batch_size``, ...)."""
    return _all_keys(RunConfig)


def closest_key(key: str) -> str | None:
    """The valid key (or section: ``trian`` -> ``train``) nearest to ``key``, compared without case; None if none is."""
    keys = _all_keys(RunConfig)
    sections = [
        name
        for name, f in RunConfig.model_fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
    ]
    by_lower = {k.lower(): k for k in [*keys, *sections]}
    match = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if not match:  # try on the last component: 'lrr' -> 'optim.lr'
        leaf = key.rsplit(".", 1)[-1].lower()
        by_leaf = {k.rsplit(".", 1)[-1].lower(): k for k in keys}
        m = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        return by_leaf[m[0]] if m else None
    return by_lower[match[0]]


def override_text(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` takes it (the value in YAML flow style): ``parse_override`` reads it back."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20)
    return f"{key}={str(text).strip().removesuffix('...').strip()}"


def _text_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> set[str]:
    """The dotted keys whose value is text (a name or a path, maybe optional): ``data.name``, ``out``, ..."""
    import typing

    keys: set[str] = set()
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= _text_keys(ann, f"{prefix}{name}.")
        elif (typing.get_args(ann) and set(typing.get_args(ann)) - {type(None)} <= {str, Path}) or ann in (str, Path):
            keys.add(f"{prefix}{name}")
    return keys


_NULLS = ("null", "Null", "NULL", "~")


def parse_override(item: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value).

    The value of a text key (a name or a path: ``data.name``, ``data.dir``, ``out``, ``wandb.project``, ...) is
    taken as typed — YAML would read ``folder:/data/cats #2`` as ``folder:/data/cats`` and a comment, ``2024`` as
    a number and ``a: b`` as a mapping — unless it is quoted (``'...'``, ``"..."``, as :func:`override_text`
    writes it) or ``null``.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not of the form key.sub=value", hint="e.g. --set optim.lr=0.05")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r} has an empty key", hint="e.g. --set optim.lr=0.05")
    text = raw.strip()
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    if text and not quoted and text not in _NULLS and key in _text_keys():
        return key, text
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError):  # ValueError: a date YAML cannot make (2024-13-45), an int of 5,000 digits
        value = raw
    except RecursionError:
        raise _too_deep(f"--set {_shorten(item)}") from None
    _check_expansion(value, f"--set {_shorten(item)}")
    return key, value


def _shorten(value: Any, limit: int = 120) -> str:
    """``repr``-like text of a config value, at most about ``limit`` characters (an error names the value)."""
    import reprlib

    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple, short.maxset = 3, 8, 8, 8, 8
    short.maxstring = short.maxother = limit
    try:
        text = value if isinstance(value, str) else short.repr(value)
    except ValueError:  # an int past Python's 4,300 digits (0xfff... in YAML): it cannot be written in decimal
        text = f"<a number too large to show ({value.bit_length()} bits)>" if isinstance(value, int) else "<...>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_expansion(tree: Any, source: str) -> None:
    """ConfigError when ``tree`` expands to more than :data:`MAX_CONFIG_NODES` values (or refers to itself).

    The walk stops at the limit, so its cost is bounded whatever the aliases would expand to.
    """
    stack, seen = [tree], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise ConfigError(
                f"{source} expands to more than {MAX_CONFIG_NODES:,} values",
                hint="a run config holds ~70 values; a YAML alias (*name) repeats all that its anchor (&name) holds",
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)


def _check_unique_keys(text: str, source: str) -> None:
    """ConfigError when a mapping of the YAML ``text`` gives a key twice: ``yaml.safe_load`` keeps the last one, so
    a second ``train:`` section would silently replace the whole first one.

    Reads the node graph (``yaml.compose``: no object is built); an alias's node is shared, so it is walked once.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    walked: set[int] = set()
    while stack:
        node, prefix = stack.pop()
        if id(node) in walked:
            continue
        walked.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, prefix) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and key.tag != "tag:yaml.org,2002:merge":  # '<<': merged keys may be overridden
                    if name in first:
                        raise ConfigError(
                            f"{source}: key '{prefix}{name}' is given twice (lines {first[name].start_mark.line + 1} "
                            f"and {key.start_mark.line + 1}); the second would silently replace the first",
                            hint=f"keep one '{name}' and merge the two",
                        )
                    first[name] = key
                stack.append((value, f"{prefix}{name}." if name is not None else prefix))


def _too_deep(source: str) -> ConfigError:
    return ConfigError(
        f"{source} is nested too deeply",
        hint="a run configuration is sections of keys (data:, model:, optim:, ...), see configs/*.yaml",
    )


def _set(tree: dict[str, Any], key: str, value: Any, source: str) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: cannot set {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _describe_errors(exc: ValidationError, source: str) -> ConfigError:
    lines, hint = [], None
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            near = closest_key(key)
            lines.append(f"unknown key '{key}' in {source}" + (f"; did you mean '{near}'?" if near else ""))
            hint = hint or (f"use '{near}'" if near else "see `imgcls train --help` and configs/*.yaml")
        else:
            value = err.get("input")
            shown = _shorten(value) if not isinstance(value, str) else repr(_shorten(value))
            lines.append(f"bad value for '{key}' in {source}: {shown} ({err['msg']})")
            if key in _text_keys() and (isinstance(value, (int, float, bool)) or type(value).__module__ == "datetime"):
                kind = {"int": "a number", "float": "a number", "bool": "true/false"}.get(
                    type(value).__name__, "a date"
                )
                hint = hint or f"YAML reads {shown} as {kind}: quote it, '{value}', to mean the text"
    return ConfigError("; ".join(lines), hint=hint)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> RunConfig:
    """Build a RunConfig from a YAML file, ``--set`` overrides and CLI flags (``None`` flags are ignored).

    Example:
        cfg = load_config("configs/digits.yaml", ["optim.lr=0.05"], {"train.epochs": 3})
    """
    tree: dict[str, Any] = {}
    source = "the configuration"
    if path is not None:
        p = Path(path)
        source = str(p)
        text = _read_config(p)
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from None
        except RecursionError:
            raise _too_deep(str(p)) from None
        except ValueError as exc:  # the value, not the syntax: Python's date or int refused what YAML matched
            raise ConfigError(
                f"{p} holds a value YAML reads as a date or number that cannot be one ({_shorten(str(exc))})",
                hint="fix the value, or quote it to keep it as text: '2024-13-45'",
            ) from None
        _check_expansion(loaded, str(p))
        _check_unique_keys(text, str(p))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of sections (data:, model:, optim:, ...)")
        tree = loaded
    for item in overrides or []:
        key, value = parse_override(item)
        _set(tree, key, value, f"--set {item}")
    for key, value in (flags or {}).items():
        if value is not None:
            _set(tree, key, value, f"flag for {key}")
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        given = overrides or any(value is not None for value in (flags or {}).values())
        raise _describe_errors(exc, f"{source} (+ overrides)" if given else source) from None


def _read_config(p: Path) -> str:
    """The text of the config file ``p``: a regular file of at most :data:`MAX_CONFIG_BYTES`, UTF-8 (or UTF-16 /
    UTF-8 with a byte-order mark, as Windows editors and PowerShell's ``>`` write them)."""
    hint = "pass a YAML file of sections (data:, model:, optim:, ...), e.g. configs/digits.yaml"
    try:
        info = os.stat(p)  # before open(): opening a FIFO would block
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{p} is a directory, not a config file", hint=hint)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{p} is not a regular file", hint=hint)
        if info.st_size > MAX_CONFIG_BYTES:
            raise _too_large(p, info.st_size)
        with open(p, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist", hint="see the files in configs/") from None
    except OSError as exc:
        raise ConfigError(f"config file {p} cannot be read ({exc.strerror or exc})", hint=hint) from None
    if len(data) > MAX_CONFIG_BYTES:  # grew while being read
        raise _too_large(p, len(data))
    codec = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        name = "UTF-16" if codec == "utf-16" else "UTF-8"
        raise ConfigError(
            f"{p} is not {name} text (byte 0x{data[exc.start]:02x} at position {exc.start})",
            hint="save it as UTF-8 text: a YAML file of sections (data:, model:, optim:, ...)",
        ) from None


def _too_large(p: Path, size: int) -> ConfigError:
    return ConfigError(
        f"{p} is {size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}",
        hint="a run configuration is a few sections of keys (see configs/*.yaml): is this the right file?",
    )


def save_config(cfg: RunConfig, path: Path) -> None:
    from imgcls.bundle import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
