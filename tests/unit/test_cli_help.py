"""`imgcls --help` and every subcommand's help must not import the heavy stacks; `imgcls --help` imports no command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from imgcls.cli import COMMANDS, load_command

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
    out = [["--help"]]
    for name in COMMANDS:
        out.append([name, "--help"])
        for sub in getattr(load_command(name), "commands", {}):
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


def _probe(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@"))
    return proc, json.loads(line[2:])


def test_root_help_lists_every_command_without_importing_any() -> None:
    proc, result = _probe(["--help"])
    assert result["code"] in (0, None)
    for name, (_, line) in COMMANDS.items():
        assert re.search(rf"│ {name} +{re.escape(line[:60])}", proc.stdout), f"{name} missing from imgcls --help"
    commands = [m for m in result["modules"] if m.startswith("imgcls.cli.") and m != "imgcls.cli._render"]
    assert commands == [] and "pydantic" not in result["modules"]


def test_the_listed_one_line_help_is_each_commands_own() -> None:
    for name, (kind, line) in COMMANDS.items():
        command = load_command(name)
        assert (command.help or "").strip().splitlines()[0] == line, name
        assert bool(getattr(command, "commands", None)) == (kind == "group"), name


def test_a_command_runs_after_the_lazy_load_and_typos_get_a_suggestion() -> None:
    proc, result = _probe(["serve", "--help"])
    assert result["code"] in (0, None) and "--max-queue" in proc.stdout
    assert "imgcls.cli.serve" in result["modules"] and "imgcls.cli.train" not in result["modules"]
    proc, result = _probe(["serv"])
    assert result["code"] == 2 and "Did you mean 'serve'" in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [("imgcls se", "1", "serve"), ("imgcls serve --max-q", "2", "--max-queue"), ("imgcls models a", "2", "alias")],
)
def test_shell_completion_reaches_lazily_loaded_commands(words: str, cword: str, expected: str) -> None:
    env = {**os.environ, "_IMGCLS_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
    script = "import sys; sys.argv = ['imgcls']; from imgcls.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert expected in proc.stdout.split(), proc.stdout + proc.stderr
