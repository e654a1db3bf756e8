"""Atomic file and directory writes: the one place that writes through a temporary name and a rename.

Every room that must never leave a half-written file behind uses these (the bundle, training checkpoints,
the local model store, dataset downloads, saved weights):

- :func:`atomic_file` yields a temporary path in the destination's directory; on a clean exit the file is
  fsync'd, given the mode ``open()`` would give it (not mkstemp's 0600) and renamed over the destination
  (the directory itself is fsync'd by :func:`swap_dirs`, not after every file). On an exception the
  temporary file is removed and the destination is untouched.
- :func:`atomic_write_bytes` / :func:`atomic_write_json` are the one-shot forms.
- :func:`swap_dirs` swaps a fully written staging directory with a live one in one
  ``renameat2(RENAME_EXCHANGE)`` where the kernel has it (two renames elsewhere): a reader sees the old
  directory or the new one, never a mix.
- :func:`staging_dir` makes the hidden sibling a directory is assembled in before that swap, and removes the
  ones a killed process left behind.
- :func:`check_output` refuses, before a command does its work, a destination it could not write at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# A temporary file or staging folder nobody holds under flock and this old was left by a killed process. The age
# covers the moment between another process's mkstemp/mkdtemp and its flock.
STALE_AFTER_S = 60.0

__all__ = [
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_output",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "link_new",
    "replace_dir",
    "staging_dir",
    "swap_dirs",
    "umask",
    "url_of",
]


def url_of(path: Path) -> str | None:
    """The URL a ``Path`` was made from (``gs://b/x`` becomes ``Path("gs:/b/x")``), or None for a real path."""
    scheme = path.parts[0] if path.parts else ""
    if not path.is_absolute() and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:", scheme):
        rest = Path(*path.parts[1:]) if len(path.parts) > 1 else ""
        # file:///srv/x is a path on this machine (its third slash is the root's), gs://b/x a bucket
        return f"{scheme}///{rest}" if scheme.lower() == "file:" else f"{scheme}//{rest}"
    return None


def check_output(path: Path, flag: str, *, folder: bool) -> None:
    """UsageError unless ``path`` (a folder to make or fill, or a file to write) could be written: no file where a
    folder above it should be, no folder where the file should be, and a folder above it this process may write in.
    For a command to call before its work (a benchmark, a training), not after it."""
    from imgcls.errors import UsageError

    url = url_of(path)
    if url is not None and url.lower().startswith("file:"):
        raise UsageError(
            f"{flag} {url} is a URL, and {flag} is a folder or file on this machine",
            hint=f"give the path itself: {flag} {url[len('file://') :]}",
        )
    if url is not None:
        scheme = url.split("//", 1)[0]
        raise UsageError(
            f"{flag} {url} is a URL, and {flag} is a folder or file on this machine",
            hint=f"give a path on this machine (a bundle goes to a bucket afterwards: `imgcls push DIR --to "
            f"{scheme}//BUCKET`)",
        )
    if path.exists():
        if folder and not path.is_dir():
            raise UsageError(f"{flag} {path} is a file, not a folder", hint=f"choose another {flag}")
        if not folder and path.is_dir():
            raise UsageError(f"{flag} {path} is a folder", hint=f"name a file for {flag}")
        target = path
    else:  # the nearest folder above it that exists ("." or "/" at the latest)
        target = next(p for p in path.parents if p.exists())
        if not target.is_dir():
            raise UsageError(f"{flag} {path}: {target} is a file, not a folder", hint=f"choose another {flag}")
    if not os.access(target, os.W_OK):
        raise UsageError(f"{flag} {path}: this user may not write {target}", hint=f"choose another {flag}")


def umask() -> int:
    """The process umask (read without changing it for longer than two syscalls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: Path,
    *,
    suffix: str = ".tmp",
    mode: int | None = None,
    commit: Callable[[Path, Path], None] = os.replace,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it completely, and it replaces ``path`` atomically.

    ``commit(tmp, path)`` puts the finished, fsync'd file in place (default: :func:`os.replace`); a store that
    must not overwrite passes :func:`link_new` (create-only), or its own compare-and-swap. Whatever it raises
    propagates, and the temporary file is removed.

    Example:
        with atomic_file(out / "weights.safetensors") as tmp:
            safetensors.torch.save_file(state, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path, suffix)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(name)
    held = _flock(fd)  # the flock that tells a live temporary file from one a killed process left
    try:
        if not held:
            os.close(fd)
        yield tmp
        # after the writer: some (safetensors) replace the file they were given, with mode 0600
        os.chmod(tmp, mode if mode is not None else 0o666 & ~umask())
        fsync_file(tmp)
        commit(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if held:
            os.close(fd)


def _flock(fd: int, *, block: bool = False) -> bool:
    """Take an exclusive flock on the open file or directory ``fd``; False without flock or when another holds it."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ModuleNotFoundError, OSError):
        return False
    return True


def _remove_stale(parent: Path, match: Callable[[str], bool], is_kind: Callable[[int], bool]) -> None:
    """Remove the entries of ``parent`` named as ``match`` says, of the kind ``is_kind`` accepts (a regular file
    or a directory, never a link), that nobody holds under flock and that are over ``STALE_AFTER_S`` old: what a
    killed process (SIGKILL, the OOM killer, a preempted machine) left, since a lock dies with its process."""
    try:
        import fcntl  # noqa: F401  (no flock: no way to tell a live entry from a dead one)
    except ModuleNotFoundError:
        return
    try:
        names = [n for n in os.listdir(parent) if match(n)]
    except OSError:
        return
    for name in names:
        path = parent / name
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not is_kind(st.st_mode) or time.time() - st.st_mtime < STALE_AFTER_S or not _flock(fd):
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            continue
        finally:
            os.close(fd)


def _remove_stale_temps(path: Path, suffix: str) -> None:
    """The temporary files of ``path`` that killed writers left: a checkpoint or an export SIGKILLed mid-write
    kept its half-written file, as big as the model and its optimiser state, beside the destination for ever."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")  # mkstemp's names
    _remove_stale(path.parent, lambda name: pattern.fullmatch(name) is not None, stat.S_ISREG)


def link_new(tmp: Path, path: Path) -> None:
    """Commit for create-only writes: hard-link ``tmp`` to ``path``; FileExistsError when ``path`` exists."""
    os.link(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and an fsync'd rename."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


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
    return bool(rc == 0)


@contextlib.contextmanager
def staging_dir(dest: Path, kind: str = "staging") -> Iterator[Path]:
    """A new hidden sibling of ``dest``, ``.{dest.name}.{kind}-XXXXXXXX``, to assemble a directory in (the same
    file system as ``dest``, so that :func:`replace_dir` is a rename); removed if the block raises.

    The process holds an ``flock`` on it while the block runs. A staging directory of a process that was killed
    (SIGKILL, the OOM killer, a power cut) kept a whole bundle's worth of disk beside ``dest`` for ever; the next
    one made for ``dest`` removes every such sibling that nobody holds and that is over a minute old
    (``STALE_AFTER_S``). Without ``flock`` (Windows) nothing is removed.
    """
    dest = Path(dest)
    prefix = f".{dest.name}.{kind}-"
    _remove_stale(dest.parent, lambda name: name.startswith(prefix), stat.S_ISDIR)
    stage = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
    try:
        fd: int | None = os.open(stage, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows opens no directory (and has no flock)
        fd = None
    if fd is not None:
        _flock(fd, block=True)  # a new directory: nobody else holds it
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def replace_dir(stage: Path, target: Path) -> None:
    """:func:`swap_dirs` after giving ``stage`` the usual directory mode (mkdtemp makes 0700)."""
    os.chmod(stage, 0o755)
    swap_dirs(stage, target)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (before a staged directory is renamed into place)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            if not p.is_symlink():
                fsync_file(p)
        fsync_dir(Path(folder))


def swap_dirs(stage: Path, live: Path) -> None:
    """Put the complete directory ``stage`` where ``live`` is, atomically; the old ``live`` is deleted.

    ``live`` may be missing (then ``stage`` is renamed into place). With ``renameat2(RENAME_EXCHANGE)`` a
    reader sees the old directory or the new one; without it there is a moment without the directory, but
    never a mixed one. Both must be on the same filesystem (put ``stage`` beside ``live``).
    """
    stage, live = Path(stage), Path(live)
    fsync_tree(stage)
    if not live.exists():
        os.rename(stage, live)
    elif _exchange(stage, live):
        shutil.rmtree(stage, ignore_errors=True)  # stage now holds the old directory
    else:
        old = live.with_name(f".{live.name}.old-{os.getpid()}")
        os.rename(live, old)
        os.rename(stage, live)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(live.parent)
