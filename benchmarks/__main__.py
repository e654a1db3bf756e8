"""`python -m benchmarks [NAME ...] [-- ARGS]`: run benchmark modules by name (all when none is named)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    chosen = argv or names
    for name in chosen:
        if name not in names:
            sys.exit(f"unknown benchmark {name!r}; choose from: {', '.join(names)}")
    for name in chosen:
        print(f"== benchmark {name}", flush=True)
        sys.argv = [name, *extra]
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()
