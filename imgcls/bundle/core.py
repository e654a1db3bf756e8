"""Reading, verifying, writing and atomically editing a bundle on disk (the schema is in ``schema.py``).

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

from pydantic import ValidationError

from imgcls.bundle.schema import INTERPOLATIONS, BundleMeta, InputSpec, Metrics
from imgcls.bundle.version import FORMAT, MAJOR, MINOR, migrate, parse_format
from imgcls.errors import BundleError, UsageError
from imgcls.fsio import atomic_write_bytes, atomic_write_json, replace_dir, staging_dir, url_of

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "INTERPOLATIONS",
    "MANIFEST",
    "WEIGHTS",
    "Bundle",
    "BundleEdit",
    "atomic_write_bytes",
    "atomic_write_json",
    "canonical_json",
    "check_editable",
    "edit_bundle",
    "load_bundle",
    "parse_manifest",
    "read_manifest",
    "replace_dir",
    "sha256_bytes",
    "sha256_file",
    "validate_rel_path",
    "verify_files",
    "write_manifest",
]

MANIFEST = "bundle.json"
WEIGHTS = "weights.safetensors"
MAX_MANIFEST_BYTES = 32 << 20  # bundle.json (its biggest part, `files`, is ~100 bytes a file)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Bundle:
    """A verified bundle on disk. ``meta`` is the typed ``bundle.json`` (migrated to the current format)."""

    path: Path
    meta: BundleMeta = field(repr=False)
    raw: dict[str, Any] = field(repr=False, default_factory=dict)  # the manifest exactly as read

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def input(self) -> InputSpec:
        return self.meta.input

    @property
    def model(self) -> dict[str, Any]:
        """The ``model`` section as a plain dict (what ``imgcls.models.registry.model_from_spec`` takes)."""
        return self.meta.model.model_dump(mode="json")

    @property
    def metrics(self) -> Metrics:
        return self.meta.metrics

    @property
    def files(self) -> dict[str, str]:
        return dict(self.meta.files)

    @property
    def digest(self) -> str:
        """sha256 of the manifest as stored: identifies this exact bundle (every file's hash is inside)."""
        return sha256_bytes(canonical_json(self.raw or self.meta.to_dict()))

    def file(self, rel: str) -> Path:
        """Path of a file the manifest lists; BundleError if it does not."""
        if rel not in self.meta.files:
            raise BundleError(
                f"bundle {self.path} has no file {rel!r}",
                hint=_missing_file_hint(rel, self.path),
            )
        return self.path / rel

    def has(self, rel: str) -> bool:
        return rel in self.meta.files


def _missing_file_hint(rel: str, path: Path) -> str:
    if rel.endswith(".onnx"):
        flag = " --int8" if "int8" in rel else " --fp16" if "fp16" in rel else ""
        return f"run `imgcls export {path}{flag}` first"
    return "re-create the bundle with `imgcls train`"


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


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_manifest(raw: Any, *, where: object = "bundle.json") -> BundleMeta:
    """Migrate and validate a parsed ``bundle.json`` into :class:`BundleMeta`; BundleError when it is not one.

    ``raw`` is not modified. Every listed file path is checked to stay inside the bundle.
    """
    if not isinstance(raw, dict):
        raise BundleError(f"{where} does not hold a JSON object")
    try:
        copy = json.loads(json.dumps(raw))
    except RecursionError:
        raise BundleError(
            f"{where} is nested too deeply to be a bundle manifest", hint="the manifest was modified or is corrupt"
        ) from None
    data = migrate(copy, where=where)
    if not isinstance(data.get("files"), dict):
        raise BundleError(f"{where}: 'files' must map relative paths to sha256", hint="the manifest is incomplete")
    for rel in data["files"]:
        validate_rel_path(str(rel))
    try:
        return BundleMeta.model_validate(data)
    except ValidationError as exc:
        missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and len(e["loc"]) == 1]
        if missing:
            raise BundleError(
                f"{where} lacks required keys: {', '.join(missing)}", hint="the manifest is incomplete"
            ) from None
        raise BundleError(
            f"{where} is malformed: {_validation_message(exc)}", hint="the manifest was modified or is corrupt"
        ) from None


class _DuplicateKey(Exception):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; ``_DuplicateKey`` when a key comes twice.

    json keeps the last of two ``"classes"`` (or two ``"files"``) without a word, other readers the first or
    neither: a manifest that says two things is refused rather than read one way here and another way there.
    """
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _read_json(path: Path) -> dict[str, Any]:
    path = Path(path)
    url = url_of(path)
    if url is not None:  # a command that works on a bundle folder on this machine (export, push, drift reference)
        local = url.lower().startswith("file:")
        raise BundleError(
            f"{url} is a URL, and a bundle folder on this machine is needed here",
            hint=f"give the path itself: {url[len('file://') :]}"
            if local
            else "a stored version is pulled first: `imgcls pull REF --to DIR`",
        )
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
    with mpath.open("rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:  # read no further: a manifest is kilobytes, never a whole file's worth
        raise BundleError(
            f"{mpath} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: no manifest imgcls writes comes near that",
            hint="the bundle is corrupt or not a bundle; pull or train it again",
        )
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_object_without_duplicates)
    except _DuplicateKey as exc:
        raise BundleError(
            f"{mpath} gives the key {exc.args[0]!r} twice in one object",
            hint="a hand edit or merge left both: keep the one that is right (the bundle is refused until then)",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(
            f"{mpath} is not valid JSON ({exc})", hint="the bundle is corrupt; pull or train it again"
        ) from None
    except RecursionError:  # '[[[[…' a hundred thousand deep: json's parser gives up with the interpreter's limit
        raise BundleError(
            f"{mpath} is nested too deeply to be a bundle manifest",
            hint="the bundle is corrupt; pull or train it again",
        ) from None
    if not isinstance(raw, dict):
        raise BundleError(f"{mpath} does not hold a JSON object")
    return raw


def read_manifest(path: Path) -> BundleMeta:
    """The typed manifest of the bundle directory ``path`` (files not verified)."""
    path = Path(path)
    return parse_manifest(_read_json(path), where=path)


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read ``bundle.json`` and verify the sha256 of every listed file.

    Example:
        bundle = load_bundle("runs/digits-resnet8")
        print(bundle.classes, bundle.meta.metrics.test_top1)
    """
    path = Path(path)
    raw = _read_json(path)
    meta = parse_manifest(raw, where=path)
    if verify:
        verify_files(path, meta.files)
    return Bundle(path=path, meta=meta, raw=raw)


def verify_files(root: Path, files: dict[str, str]) -> None:
    """Raise BundleError unless every listed file exists inside ``root`` with the listed sha256.

    A listed path that leads out of the bundle through a symbolic link (the file itself, or a folder on its way)
    is refused: what is verified, pushed or loaded is the bundle's own content, never a file elsewhere on this
    machine.
    """
    real_root = Path(os.path.realpath(root))
    for rel, expected in files.items():
        fpath = root / validate_rel_path(rel)
        real = Path(os.path.realpath(fpath))
        if real != real_root and real_root not in real.parents:
            raise BundleError(
                f"bundle {root} lists {rel}, a symbolic link that leads out of the bundle; refused",
                hint="put the file itself in the bundle in place of the link (or pull or train the bundle again)",
            )
        if fpath.exists() and not fpath.is_file():
            raise BundleError(
                f"bundle {root} lists {rel}, which is not a regular file",
                hint="the bundle was modified; pull or train it again",
            )
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


def _format_to_write(current: str | None) -> str:
    """The current format, or the newer minor a bundle was loaded with (its unknown keys are kept)."""
    version = parse_format(current)
    return str(current) if version is not None and version[0] == MAJOR and version[1] > MINOR else FORMAT


def write_manifest(path: Path, meta: BundleMeta | dict[str, Any], files: list[str]) -> BundleMeta:
    """Hash ``files`` (relative to ``path``), store them in ``meta.files`` and write ``bundle.json``.

    ``meta`` is a :class:`BundleMeta` (a dict is validated into one first). Returns the manifest written.
    """
    if isinstance(meta, dict):
        data = {**meta, "format": meta.get("format") or FORMAT, "files": {}}
        meta = parse_manifest(data, where=Path(path) / MANIFEST)
    out = meta.model_copy(deep=True)
    out.format = _format_to_write(meta.format)
    out.files = {rel: sha256_file(Path(path) / validate_rel_path(rel)) for rel in sorted(set(files))}
    atomic_write_json(Path(path) / MANIFEST, out.to_dict())
    return out


# --- atomic edits ----------------------------------------------------------------------------------------


@dataclass
class BundleEdit:
    """A staged edit (see :func:`edit_bundle`): change ``meta``, add or remove files, nothing else."""

    stage: Path
    meta: BundleMeta
    files: list[str]

    def write(self, rel: str, data: bytes) -> Path:
        """Write a new file (never in place: the old one is a hard link into the live bundle) and list it."""
        dest = self.stage / validate_rel_path(rel)
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        atomic_write_bytes(dest, data)
        self.add(rel)
        return dest

    def add(self, rel: str) -> None:
        """List a file already written into ``stage``."""
        if validate_rel_path(rel) not in self.files:
            self.files.append(rel)

    def remove(self, rel: str) -> None:
        """Drop a file from the bundle (deleted when the edit is swapped in)."""
        if rel in self.files:
            self.files.remove(rel)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def check_editable(path: str | Path, command: str) -> None:
    """UsageError unless an edit of the bundle at ``path`` could be swapped in: for a command to call before its
    work (an export's minutes of conversion and gates), not after it.

    :func:`edit_bundle` stages its copy beside the bundle, so the bundle's parent folder must take a new folder.
    The probe makes one (and removes it) instead of asking ``os.access``, which says yes to root on a read-only
    file system.
    """
    path = Path(path).resolve()
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=path.parent))
    except OSError as exc:
        raise UsageError(
            f"{command} cannot change {path}: {path.parent} does not take the new copy of the bundle "
            f"({exc.strerror or exc})",
            hint=f"copy the bundle to a folder you may write to (cp -r {path} DIR) and {command} that copy",
        ) from None


@contextlib.contextmanager
def _edit_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the bundle's parent folder from the edit's load to its swap.

    Two edits of one bundle at once (``imgcls export --int8`` beside ``imgcls export --fp16``, or beside ``imgcls
    drift reference``) each staged the bundle as they had loaded it and swapped it in: the last swap won and the
    other's files were lost, and an edit that linked its files after the other's swap mixed the new files with
    its old manifest. The lock is on the parent folder, whose inode stays while the bundle's own is swapped, so
    the second edit waits (and says so) and then loads what the first one wrote; an edit of another bundle in the
    same folder waits too, a cost taken to leave no lock file beside the bundles. Where there is no ``flock``
    (Windows) edits are not serialised.
    """
    try:
        import fcntl
    except ModuleNotFoundError:
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # said, so that a wait of an export's minutes is not taken for a hang
            logger.warning(
                "waiting for another edit of a bundle in %s to end (an imgcls export or drift reference)", path.parent
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def edit_bundle(path: str | Path) -> Iterator[BundleEdit]:
    """Stage an edit of a verified bundle and swap it in atomically when the block exits cleanly.

    Yields a :class:`BundleEdit`: change ``edit.meta`` (typed), write new files with ``edit.write(rel, data)``
    (or write into ``edit.stage`` yourself -- a new file, never in place: existing files are hard links
    shared with the live bundle -- and ``edit.add(rel)``), drop files with ``edit.remove(rel)``. On an
    exception nothing changes.

    Example:
        with edit_bundle(b) as edit:
            edit.write("model.onnx", onnx_bytes)
            edit.meta.export = section
    """
    path = Path(path).resolve()
    with _edit_lock(path):
        bundle = load_bundle(path)
        with staging_dir(path) as stage:
            for rel in bundle.meta.files:
                _link_or_copy(path / rel, stage / rel)
            for extra in path.iterdir():  # keep unlisted side files (logs, checkpoints) too
                if extra.name != MANIFEST and extra.name not in bundle.meta.files and not (stage / extra.name).exists():
                    if extra.is_dir():
                        shutil.copytree(extra, stage / extra.name, copy_function=os.link)
                    else:
                        _link_or_copy(extra, stage / extra.name)
            edit = BundleEdit(stage=stage, meta=bundle.meta.model_copy(deep=True), files=list(bundle.meta.files))
            yield edit
            for rel in edit.files:
                if not (stage / rel).is_file():
                    raise BundleError(f"edit left the bundle without {rel}")
            write_manifest(stage, edit.meta, edit.files)
            for stale in set(bundle.meta.files) - set(edit.files):
                with contextlib.suppress(FileNotFoundError):
                    (stage / stale).unlink()
            replace_dir(stage, path)
