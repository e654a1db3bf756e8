"""imgcls.cli._files.find_images: the command line's files, directories and globs -> files to predict."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.cli._files import find_images
from imgcls.data.decode import image_suffixes
from imgcls.errors import UsageError


def test_find_images_walks_directories_globs_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".git").mkdir()
    for rel in ["d/a.png", "d/sub/b.JPG", "d/notes.txt", "d/sub/c.webp", "d/.DS_Store", "d/.git/x.png",
                "e.jpeg", "f.png"]:  # fmt: skip
        (tmp_path / rel).write_bytes(b"x")
    args = [tmp_path / "d", str(tmp_path / "*.jpeg"), tmp_path / "f.png", tmp_path / "f.png"]
    rel = [str(p.relative_to(tmp_path)) for p in find_images(args)]
    # every file of a named directory, whatever its suffix (its content decides, and a failure gets a line);
    # hidden files and folders aside
    assert rel == ["d/a.png", "d/notes.txt", "d/sub/b.JPG", "d/sub/c.webp", "e.jpeg", "f.png"]
    assert find_images([tmp_path / "missing.png"]) == [tmp_path / "missing.png"]  # reported later as not found
    assert find_images([tmp_path / "d" / ".DS_Store"]) == [tmp_path / "d" / ".DS_Store"]  # named: kept


def test_find_images_with_nothing_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="nothing to predict") as info:
        find_images([tmp_path / "empty", str(tmp_path / "*.png")])
    assert info.value.exit_code == 2


def test_the_one_suffix_list_follows_the_decoded_formats() -> None:
    assert image_suffixes() == (".jpg", ".jpeg", ".png", ".webp")
    assert image_suffixes(allow_webp=False) == (".jpg", ".jpeg", ".png")
