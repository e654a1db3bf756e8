"""Command-line file arguments -> the files to work on (directories walked, globs expanded): a CLI job only."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from imgcls.errors import UsageError


def find_images(patterns: Iterable[str | Path]) -> list[Path]:
    """Files to predict from command-line arguments: files, directories (recursive) and globs.

    Every file counts, whatever its suffix: its content decides whether it decodes, and one that does not
    gets its own error line (a folder of 23 photos gives 23 lines, never 22 and exit 0). Hidden files and
    folders inside a named directory (``.DS_Store``, ``.git/``) are left out. A name that neither exists nor
    matches as a glob is kept, so it is reported as not found. Order is preserved, sorted within directories
    and globs; duplicates are dropped.

    Raises:
        UsageError: nothing to predict (no arguments, only empty directories or globs without a match).
    """
    patterns = list(patterns)
    found: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if path.is_dir():
            found.extend(_walk(path))
        elif path.exists() or not glob.has_magic(text):
            found.append(path)
        else:
            for match in sorted(glob.glob(text, recursive=True)):
                m = Path(match)
                if m.is_dir():
                    found.extend(_walk(m))
                elif m.is_file():
                    found.append(m)
    unique = list(dict.fromkeys(found))
    if not unique:
        given = ", ".join(str(p) for p in patterns) or "(none)"
        raise UsageError(
            f"nothing to predict: no image files in {given}",
            hint="pass image files (JPEG, PNG, WebP), directories holding them, or a glob like 'imgs/*.png'",
        )
    return unique


def _walk(root: Path) -> list[Path]:
    """Every non-hidden file below ``root``, sorted (hidden: a name starting with ``.`` at any depth)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
