"""What the commands print shows the user's text as it is: rich reads ``[...]`` as markup and ``:name:`` as an
emoji, so a run directory named ``b[/x]`` crashed ``imgcls train`` and ``uniform:a:b`` printed as ``uniform🅰b``."""

from __future__ import annotations

import errno

import pytest

from imgcls.cli._render import console, err_console, file_system_error, print_error, styled


def test_an_error_shows_its_message_and_hint_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    print_error("--param 'optim.lr=uniform:a:b': uniform needs LOW:HIGH numbers", "see runs/[/x] and [bold]it[/]")
    err = capsys.readouterr().err
    assert "error: --param 'optim.lr=uniform:a:b': uniform needs LOW:HIGH numbers" in err
    assert "hint: see runs/[/x] and [bold]it[/]" in err


def test_plain_lines_and_tables_print_brackets_and_colons_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.table import Table

    console.print("run directory runs/lr[0.1]/[/x] :cat:", soft_wrap=True)
    table = Table()
    table.add_column("class")
    table.add_row("[bold]seven")
    table.add_row(":one:")
    console.print(table)
    err_console.print("[red]x", soft_wrap=True)
    out = capsys.readouterr()
    assert "run directory runs/lr[0.1]/[/x] :cat:" in out.out
    assert "[bold]seven" in out.out and ":one:" in out.out
    assert "[red]x" in out.err


def test_styled_fills_values_as_they_are_and_keeps_number_formats() -> None:
    text = styled("[bold green]bundle[/] {} top-1 [bold]{:.4f}[/] {:,} {name}", "runs/[/x]", 0.98765, 12345, name=":a:")
    assert text.plain == "bundle runs/[/x] top-1 0.9877 12,345 :a:"
    assert any("bold" in str(span.style) for span in text.spans)  # the template's own markup is styling


@pytest.mark.parametrize(
    ("err", "message", "fix"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/run/last.safetensors"),
         "cannot use /data/run/last.safetensors: no space left on device", "free some space"),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/runs"), "cannot use /srv/runs: permission denied",
         "a folder you may write to"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "read-only file system", "read-only"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"),
         "cannot use a -> b: invalid cross-device link", "check the path"),
    ],
)  # fmt: skip
def test_a_file_system_error_names_the_path_and_the_fix(err: OSError, message: str, fix: str) -> None:
    got, hint = file_system_error(err)
    assert message in got
    assert fix in hint


_RAISES = """
import atexit, os
import typer
from imgcls.cli._render import run
from imgcls.errors import UsageError
from imgcls.train.distributed import PeerTimeout
atexit.register(lambda: open(os.environ["TEARDOWN_MARKER"], "w").write("teardown ran"))
app = typer.Typer()
@app.command()
def main(peer: bool = False) -> None:
    raise PeerTimeout("rank 0: no answer", hint="raise it") if peer else UsageError("bad flag", hint="fix it")
run(app)
"""


@pytest.mark.parametrize(("flag", "code", "said", "teardown"), [
    ("--peer", 4, "error: rank 0: no answer\nhint: raise it", False),  # its stuck threads would abort the teardown
    ("--no-peer", 2, "error: bad flag\nhint: fix it", True),
])  # fmt: skip
def test_a_peer_timeout_ends_the_process_at_once_after_its_message(tmp_path, flag, code, said, teardown) -> None:
    import os
    import subprocess
    import sys

    marker = tmp_path / "teardown"
    env = {**os.environ, "TEARDOWN_MARKER": str(marker)}
    proc = subprocess.run([sys.executable, "-c", _RAISES, flag], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert said in proc.stderr
    assert marker.exists() is teardown
