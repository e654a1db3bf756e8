"""User text made safe to show: file names, class names and messages as a terminal or a chart displays them.

A file name is any bytes but ``/`` and NUL. Printed as it is, ``evil\\x1b]0;title\\x07.png`` retitles the terminal,
``\\x1b[2J`` clears it, ``\\x1b]52;c;...`` writes the clipboard, and an RTL override (U+202E) shows ``gnp.exe`` as
``exe.png``; a byte that is not UTF-8 (a Latin-1 ``café`` from an old zip, held by Python as a lone surrogate)
cannot be encoded at all, and printing it was ``UnicodeEncodeError`` under a strict UTF-8 locale. :func:`printable`
writes each of them as an escape, the way ``ls`` and Python's ``repr`` do, and leaves every other character,
newlines and tabs included, as it is.
"""

from __future__ import annotations

import re

_SHOWN_AS_ESCAPE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 controls but tab and newline, DEL, C1 controls (\x9b is a CSI on its own)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional marks, embeddings, overrides and isolates
    "\ud800-\udfff]"  # lone surrogates: undecodable bytes of a file name (surrogateescape), or broken text
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters, bidirectional overrides and undecodable bytes written as escapes.

    Example:
        >>> printable("evil\\x1b[2J.png")
        'evil\\\\x1b[2J.png'
        >>> printable("caf\\udce9.png")
        'caf\\\\xe9.png'
    """
    return _SHOWN_AS_ESCAPE.sub(_escape, text)


def has_control(text: str) -> bool:
    """Whether :func:`printable` would change ``text`` for anything but an undecodable byte."""
    return any(not 0xDC80 <= ord(m.group()) <= 0xDCFF for m in _SHOWN_AS_ESCAPE.finditer(text))


# A class name is a label every prediction carries (answers, logs, charts, the page): a folder name is at most 255
# bytes (ext4, APFS) and ImageNet-21k's WordNet synonym lists run to a few hundred characters; more is a paragraph
# in every answer, not a name.
MAX_CLASS_NAME_CHARS = 1000


def class_name_problem(name: str) -> str | None:
    """What makes ``name`` no class name (empty, too long, not UTF-8, a control character, a newline or a tab:
    a label that moves a terminal's cursor or splits a CSV line is no label), or None.

    Example:
        >>> class_name_problem("cat\\x1b[2J")
        'has a control character (an escape, a newline, a tab or a bidirectional override)'
    """
    if not name:
        return "is empty"
    if len(name) > MAX_CLASS_NAME_CHARS:
        return f"is {len(name):,} characters long, more than the {MAX_CLASS_NAME_CHARS:,} a class name may have"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if has_control(name) or "\n" in name or "\t" in name:
        return "has a control character (an escape, a newline, a tab or a bidirectional override)"
    return None
