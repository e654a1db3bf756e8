"""Command-line file arguments -> the files to work on (directories walked, globs expanded): a CLI job only."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from imgcls.errors import UsageError


def find_images(patterns: Iterable[str | Path], *, suffixes: Iterable[str]) -> list[Path]:
    """Files to predict from command-line arguments: files, directories (recursive, ``suffixes``) and globs.

    A named file is kept whatever its suffix (its content decides whether it decodes); a name that neither
    exists nor matches as a glob is kept too, so it is reported as not found. Order is preserved, sorted
    within directories and globs; duplicates are dropped.

    Raises:
        UsageError: nothing to predict (no arguments, only empty directories or globs without a match).
    """
    patterns = list(patterns)
    wanted = {s.lower() for s in suffixes}
    found: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted))
        elif path.exists() or not glob.has_magic(text):
            found.append(path)
        else:
            for match in sorted(glob.glob(text, recursive=True)):
                m = Path(match)
                if m.is_dir():
                    found.extend(sorted(p for p in m.rglob("*") if p.is_file() and p.suffix.lower() in wanted))
                elif m.is_file():
                    found.append(m)
    unique = list(dict.fromkeys(found))
    if not unique:
        given = ", ".join(str(p) for p in patterns) or "(none)"
        raise UsageError(
            f"nothing to predict: no image files in {given}",
            hint=f"pass image files, directories holding {'/'.join(sorted(wanted))} files, or a glob like 'imgs/*.png'",
        )
    return unique
