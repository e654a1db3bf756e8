"""`imgcls --help` and every subcommand's help must not import the heavy stacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgcls.cli import app

HEAVY = ("torch", "torchvision", "timm", "evidently", "wandb", "google.cloud", "onnx", "pandas", "matplotlib")

_PROBE = """
import json, sys
from imgcls.cli import app
try:
    app(args={args!r}, prog_name="imgcls")
except SystemExit as e:
    code = e.code
print("@@" + json.dumps({{"code": code, "modules": sorted(m for m in sys.modules)}}))
"""


def _commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    out = [["--help"]]
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        out.append([name, "--help"])
        for sub in getattr(cmd, "commands", {}):
            out.append([name, sub, "--help"])
    return out


@pytest.mark.parametrize("args", _commands(), ids=lambda a: " ".join(a))
def test_help_exits_0_without_importing_heavy_modules(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args)], capture_output=True, text=True, timeout=60, check=False
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@"))
    result = json.loads(line[2:])
    assert result["code"] in (0, None), proc.stdout + proc.stderr
    loaded = [m for m in result["modules"] if m.split(".")[0] in HEAVY or m.startswith("google.cloud")]
    assert not loaded, f"`imgcls {' '.join(args)}` imported {loaded[:5]}"
    assert "Usage" in proc.stdout


def test_version_flag_prints_the_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("imgcls ")
