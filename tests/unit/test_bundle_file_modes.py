"""Bundle files get the mode open() would give them: a bundle mounted into the non-root image must be readable."""

from __future__ import annotations

import os
from pathlib import Path


def test_every_bundle_file_has_the_umask_mode(random_bundle: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    want = 0o666 & ~mask
    modes = {p.name: p.stat().st_mode & 0o777 for p in random_bundle.iterdir() if p.is_file()}
    assert "weights.safetensors" in modes
    assert modes == dict.fromkeys(modes, want)
