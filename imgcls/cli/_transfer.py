"""Rendering shared by push / pull / models: a progress bar for large files and version tables."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from imgcls.cli._render import err_console

LARGE_FILE = 4 << 20  # bytes; smaller files move without a bar


@contextlib.contextmanager
def transfer_progress(verb: str) -> Iterator[Callable[[str, int, int], None]]:
    """Yield a ``progress(key, done, total)`` callback that draws one bar per large file on stderr."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bars = Progress(
        TextColumn("{task.description}", markup=False),  # a file's name, shown as it is
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def progress(key: str, done: int, total: int) -> None:
        if total < LARGE_FILE:
            return
        if key not in tasks:
            if not tasks:
                bars.start()
            tasks[key] = bars.add_task(f"{verb} {key.rsplit('/', 1)[-1]}", total=total)
        bars.update(tasks[key], completed=done)

    try:
        yield progress
    finally:
        if tasks:
            bars.stop()


def format_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    parts = []
    for key, value in list(metrics.items())[:limit]:
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def format_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
