"""The import-linter contracts of pyproject.toml (run by `nox -s lint`) hold, and they do catch a breach.

The proof runs lint-imports on a copy of the package with three forbidden imports injected: a lazy
``import torch`` inside a serve function, ``imgcls.train`` from ``imgcls.cli.predict``, and ``imgcls.models``
from the data room (a layer importing the layer above it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", command, "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


def test_the_contracts_hold_on_the_code() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_contracts_fail_when_a_room_imports_what_it_must_not(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "imgcls", tmp_path / "imgcls", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "imgcls" / "serve" / "__init__.py").open("a") as f:
        f.write("\n\ndef _leak() -> None:\n    import torch  # lazy, and still refused\n")
    with (tmp_path / "imgcls" / "cli" / "predict.py").open("a") as f:
        f.write("\n\ndef _train() -> None:\n    import imgcls.train\n")
    with (tmp_path / "imgcls" / "data" / "__init__.py").open("a") as f:
        f.write("\nimport imgcls.models\n")
    result = lint_imports(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "Contracts: 0 kept, 2 broken." in out, out
    assert "imgcls.serve -> torch" in out, out
    assert "imgcls.cli.predict -> imgcls.train" in out, out
    assert "imgcls.data -> imgcls.models" in out, out
