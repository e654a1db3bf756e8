"""Command-line file arguments -> the files to work on (directories walked, globs expanded): a CLI job only."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from imgcls.errors import UsageError


def find_images(patterns: Iterable[str | Path]) -> list[Path]:
    """Files to predict from command-line arguments: files, directories (recursive) and globs.

    Every file counts, whatever its suffix: its content decides whether it decodes, and one that does not
    gets its own error line (a folder of 23 photos gives 23 lines, never 22 and exit 0). Hidden files and
    folders inside a named directory (``.DS_Store``, ``.git/``) are left out. A name that neither exists nor
    matches as a glob is kept, so it is reported as not found (as a shell passes a glob without a match): a
    missing ``photo[1].png`` among other files was dropped without a word, and predict exited 0. Order is
    preserved, sorted within directories and globs; duplicates are dropped.

    Raises:
        UsageError: nothing to predict (no arguments, only empty directories or globs without a match).
    """
    patterns = list(patterns)
    found: list[Path] = []
    unmatched: set[Path] = set()
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if path.is_dir():
            found.extend(_walk(path))
        elif path.exists() or not glob.has_magic(text):
            found.append(path)
        else:
            matches = sorted(_glob(text))
            if not matches:  # 'photo[1].png' not there, 'imgs/*.jpeg' in a folder of .jpg: reported as not found
                found.append(path)
                unmatched.add(path)
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    found.extend(_walk(m))
                elif m.is_file():
                    found.append(m)
    unique = list(dict.fromkeys(found))
    if all(p in unmatched for p in unique):
        given = ", ".join(str(p) for p in patterns) or "(none)"
        raise UsageError(
            f"nothing to predict: no image files in {given}",
            hint="pass image files (JPEG, PNG, WebP), directories holding them, or a glob like 'imgs/*.png'",
        )
    return unique


def _glob(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` does not follow symbolic links to folders.

    glob's ``**`` does, so a folder holding a link to itself (or to a folder above it) was searched down the
    loop until the kernel refused the path: each image was predicted 41 times under names like
    ``d/self/self/.../a.png``, and two such links made 2**40 paths (predict hung). ``**`` here is a walk that
    does not enter linked folders, as a directory argument's walk does not; hidden folders are left out as glob
    leaves them out, and the rest of the pattern is glob's own.
    """
    parts = pattern.split("/")
    if "**" not in parts:
        return glob.glob(pattern)
    i = parts.index("**")
    head = "/" if parts[:i] == [""] else "/".join(parts[:i])
    tail = "/".join(parts[i + 1 :])
    roots = glob.glob(head) if glob.has_magic(head) else [head]
    found: list[str] = []
    for root in roots:
        if not os.path.isdir(root or "."):
            continue
        for folder, dirs, files in os.walk(root or ".", followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(folder, root or ".")
            here = root if rel == "." else os.path.join(root, rel)
            if not tail:  # 'd/**': every file below d (its folders are walked here already)
                found.extend(os.path.join(here, f) for f in files if not f.startswith("."))
            else:
                found.extend(_glob(os.path.join(glob.escape(here), tail) if here else tail))
    return found


def _walk(root: Path) -> list[Path]:
    """Every non-hidden entry below ``root`` that is not a folder, sorted (hidden: a name starting with ``.`` at any
    depth), and every folder that cannot be read. Linked folders are not entered (a link to a folder above would
    loop). A FIFO, a socket or a dangling link is listed, and so is an unreadable folder: each gets its own error
    line from predict, where ``rglob`` had left them out without a word (exit 0 over a folder it never read)."""
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        if exc.filename is not None:
            found.append(Path(exc.filename))

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=False):
        here = Path(folder)
        kept = [d for d in dirs if not d.startswith(".")]
        dirs[:] = [d for d in kept if not (here / d).is_symlink()]
        found.extend(here / f for f in files if not f.startswith("."))
    return sorted(dict.fromkeys(found))
