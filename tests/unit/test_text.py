"""imgcls.text.printable: what a terminal would act on, or cannot encode, is shown as an escape."""

from __future__ import annotations

import logging

import pytest

from imgcls.text import has_control, printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("evil\x1b]0;title\x07.png", "evil\\x1b]0;title\\x07.png"),  # OSC: retitles the terminal
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # CSI: clears the screen
        ("x\x9b31my", "x\\x9b31my"),  # an 8-bit CSI on its own
        ("over\rwrite", "over\\x0dwrite"),  # a carriage return hides what came before
        ("del\x7f", "del\\x7f"),
        ("rtl\u202egnp.exe", "rtl\\u202egnp.exe"),  # shown as 'exe.png' by a terminal
        ("iso\u2066late\u2069", "iso\\u2066late\\u2069"),
        ("caf\udce9", "caf\\xe9"),  # a byte that is not UTF-8, as os.fsdecode holds it
    ],
)
def test_what_a_terminal_would_act_on_is_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    printable(raw).encode("utf-8")  # encodable under a strict UTF-8 locale


def test_ordinary_text_is_left_as_it_is() -> None:
    text = "Zürich café 猫 🐱 runs/lr[0.1]\tcolumn\nsecond line × 32"
    assert printable(text) == text
    assert not has_control(text)


def test_has_control_ignores_an_undecodable_byte() -> None:
    assert has_control("cat\x1b[2J") and has_control("a\u202eb")
    assert not has_control("caf\udce9")


def test_cli_consoles_styled_text_and_log_lines_show_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    from imgcls.cli._render import LogFormatter, console, print_error, styled

    console.print("file \x1b[31mred.png")
    console.print(styled("[bold]{}[/]", "b\x1b]52;c;Y2xpcA==\x07"))
    print_error("cannot read caf\udce9.png", hint="rename rtl\u202egnp.png")
    record = logging.LogRecord("imgcls.data", logging.WARNING, __file__, 1, "skipped %s", ("a\x1b[2J.png",), None)
    line = LogFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    out, err = capsys.readouterr()
    assert "file \\x1b[31mred.png" in out and "b\\x1b]52;c;Y2xpcA==\\x07" in out
    assert "caf\\xe9.png" in err and "rtl\\u202egnp.png" in err
    assert line == "WARNING imgcls.data: skipped a\\x1b[2J.png"
    assert "\x1b" not in out + err + line
