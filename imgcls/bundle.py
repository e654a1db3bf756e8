"""The model bundle: the one contract between train, export, push, serve, predict, drift and bench.

A bundle is a directory marked by ``bundle.json``. The manifest says everything a later step needs
(classes, input spec, architecture, metrics, lineage) and lists the sha256 of every file that belongs to
the bundle. Loading verifies every hash: a tampered, partial or unknown-format bundle is refused.

Edits are atomic: :func:`edit_bundle` stages a hard-linked copy beside the bundle, lets the caller add or
replace files (always by writing a new file, never in place), rewrites the manifest and swaps the staging
directory in with one ``renameat2(RENAME_EXCHANGE)`` where the kernel has it. A reader sees the old bundle
or the new one, never a mix; a crash leaves the old bundle intact.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls.errors import BundleError

logger = logging.getLogger(__name__)

FORMAT = "imgcls.bundle/1"
MANIFEST = "bundle.json"
WEIGHTS = "weights.safetensors"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and an fsync'd rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: the evaluation transform is fully determined by this."""

    size: tuple[int, int]  # (height, width) in pixels
    channels: int  # 1 (grayscale) or 3 (RGB)
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise BundleError(f"input.channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise BundleError(f"input.mean/std need {self.channels} values, got {self.mean} / {self.std}")
        if any(s <= 0 for s in self.std):
            raise BundleError(f"input.std must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise BundleError(f"input.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        try:
            size = d["size"]
            return cls(
                size=(int(size[0]), int(size[1])),
                channels=int(d["channels"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                interpolation=str(d.get("interpolation", "bilinear")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BundleError(f"bundle input spec is malformed: {d!r}") from exc


@dataclass
class Bundle:
    """A verified bundle on disk. ``meta`` is the parsed ``bundle.json``."""

    path: Path
    meta: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def input(self) -> InputSpec:
        return InputSpec.from_dict(self.meta["input"])

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.meta["model"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.meta.get("metrics", {}))

    @property
    def files(self) -> dict[str, str]:
        return dict(self.meta["files"])

    @property
    def digest(self) -> str:
        """sha256 of the manifest: identifies this exact bundle (every file's hash is inside)."""
        return sha256_bytes(canonical_json(self.meta))

    def file(self, rel: str) -> Path:
        """Path of a file the manifest lists; BundleError if it does not."""
        if rel not in self.meta["files"]:
            raise BundleError(
                f"bundle {self.path} has no file {rel!r}",
                hint=_missing_file_hint(rel, self.path),
            )
        return self.path / rel

    def has(self, rel: str) -> bool:
        return rel in self.meta["files"]


def _missing_file_hint(rel: str, path: Path) -> str:
    if rel.endswith(".onnx"):
        flag = " --int8" if "int8" in rel else " --fp16" if "fp16" in rel else ""
        return f"run `imgcls export {path}{flag}` first"
    return "re-create the bundle with `imgcls train`"


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


_REQUIRED = ("format", "name", "classes", "input", "model", "files")


def validate_rel_path(rel: str) -> str:
    """A bundle file path: relative, forward slashes, no '..' or hidden tricks."""
    p = Path(rel)
    if (
        not rel
        or "\\" in rel
        or "\x00" in rel
        or rel.startswith("/")
        or p.is_absolute()
        or any(part in ("..", ".", "") for part in rel.split("/"))
    ):
        raise BundleError(f"bundle lists an unsafe file path {rel!r}", hint="the manifest was tampered with")
    return rel


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise BundleError(f"no bundle at {path}: the directory does not exist", hint="check the path")
    if not path.is_dir():
        raise BundleError(f"{path} is not a bundle directory", hint="pass the directory that holds bundle.json")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(
            f"{path} is not a model bundle: {MANIFEST} is missing",
            hint="pass a directory written by `imgcls train` (or pulled with `imgcls pull`)",
        )
    try:
        meta = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(
            f"{mpath} is not valid JSON ({exc})", hint="the bundle is corrupt; pull or train it again"
        ) from None
    if not isinstance(meta, dict):
        raise BundleError(f"{mpath} does not hold a JSON object")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise BundleError(
            f"{path} has unknown bundle format {fmt!r} (this imgcls reads {FORMAT!r})",
            hint="upgrade imgcls, or re-create the bundle with this version",
        )
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{mpath} lacks required keys: {', '.join(missing)}", hint="the manifest is incomplete")
    if not isinstance(meta["files"], dict):
        raise BundleError(f"{mpath}: 'files' must map relative paths to sha256")
    for rel in meta["files"]:
        validate_rel_path(rel)
    return meta


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read ``bundle.json`` and verify the sha256 of every listed file.

    Example:
        bundle = load_bundle("runs/digits-resnet8")
        print(bundle.classes, bundle.metrics["test_top1"])
    """
    path = Path(path)
    meta = read_manifest(path)
    if verify:
        verify_files(path, meta["files"])
    bundle = Bundle(path=path, meta=meta)
    bundle.input  # noqa: B018  (validates the input spec)
    return bundle


def verify_files(root: Path, files: dict[str, str]) -> None:
    """Raise BundleError unless every listed file exists with the listed sha256."""
    for rel, expected in files.items():
        fpath = root / validate_rel_path(rel)
        if not fpath.is_file():
            raise BundleError(
                f"bundle {root} is incomplete: {rel} is missing",
                hint="the bundle is partial; pull or train it again",
            )
        actual = sha256_file(fpath)
        if actual != expected:
            raise BundleError(
                f"bundle {root} failed verification: {rel} has sha256 {actual[:12]}…, "
                f"the manifest says {str(expected)[:12]}…",
                hint="the file was modified or corrupted; pull or train the bundle again",
            )


def write_manifest(path: Path, meta: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Hash ``files`` (relative to ``path``), store them under ``meta['files']`` and write bundle.json."""
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["files"] = {rel: sha256_file(path / validate_rel_path(rel)) for rel in sorted(set(files))}
    atomic_write_json(path / MANIFEST, meta)
    return meta


# --- atomic edits ----------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def replace_dir(stage: Path, target: Path) -> None:
    """Make the complete directory ``stage`` become ``target`` in one step; the old ``target`` is removed.

    With renameat2(RENAME_EXCHANGE) readers see either the old or the new directory; without it, two renames:
    a moment without the directory, but never a mixed one. ``target`` need not exist.
    """
    os.chmod(stage, 0o755)
    if not target.exists():
        os.rename(stage, target)
    elif _exchange(stage, target):
        shutil.rmtree(stage, ignore_errors=True)  # stage now holds the old directory
    else:
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(stage, target)
        shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def edit_bundle(path: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Stage an edit of a verified bundle and swap it in atomically when the block exits cleanly.

    Yields ``(staging_dir, meta)``. Write new files into ``staging_dir`` (replace a file by writing a new one;
    existing files are hard links shared with the live bundle, so never modify them in place), change
    ``meta`` as needed, and set ``meta['files']`` to the list of relative paths that belong to the bundle
    (by default, the files already listed). On an exception nothing changes.

    Example:
        with edit_bundle(b) as (stage, meta):
            (stage / "model.onnx").write_bytes(onnx_bytes)
            meta["files"] = [*meta["files"], "model.onnx"]
    """
    path = Path(path).resolve()
    bundle = load_bundle(path)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        for rel in bundle.meta["files"]:
            _link_or_copy(path / rel, stage / rel)
        for extra in path.iterdir():  # keep unlisted side files (logs, checkpoints) too
            if extra.name != MANIFEST and extra.name not in bundle.meta["files"] and not (stage / extra.name).exists():
                if extra.is_dir():
                    shutil.copytree(extra, stage / extra.name, copy_function=os.link)
                else:
                    _link_or_copy(extra, stage / extra.name)
        meta = json.loads(json.dumps(bundle.meta))
        meta["files"] = list(bundle.meta["files"])
        yield stage, meta
        files = meta.pop("files")
        for rel in list(files):
            if not (stage / rel).is_file():
                raise BundleError(f"edit left the bundle without {rel}")
        write_manifest(stage, meta, files)
        for stale in set(bundle.meta["files"]) - set(files):
            with contextlib.suppress(FileNotFoundError):
                (stage / stale).unlink()
        replace_dir(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
