"""imgcls.cli._files.find_images: the command line's files, directories and globs -> files to predict."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.cli._files import find_images
from imgcls.data.decode import image_suffixes
from imgcls.errors import UsageError


def test_find_images_walks_directories_globs_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for rel in ["d/a.png", "d/sub/b.JPG", "d/notes.txt", "d/sub/c.webp", "e.jpeg", "f.png"]:
        (tmp_path / rel).write_bytes(b"x")
    webp = image_suffixes(allow_webp=True)
    args = [tmp_path / "d", str(tmp_path / "*.jpeg"), tmp_path / "f.png", tmp_path / "f.png"]
    found = find_images(args, suffixes=webp)
    rel = [str(p.relative_to(tmp_path)) for p in found]
    assert rel == ["d/a.png", "d/sub/b.JPG", "d/sub/c.webp", "e.jpeg", "f.png"]
    no_webp = find_images([tmp_path / "d"], suffixes=image_suffixes())
    assert [str(p.relative_to(tmp_path)) for p in no_webp] == ["d/a.png", "d/sub/b.JPG"]
    assert find_images([tmp_path / "d"], suffixes=(".png",)) == [tmp_path / "d" / "a.png"]
    missing = find_images([tmp_path / "missing.png"], suffixes=webp)
    assert missing == [tmp_path / "missing.png"]  # reported later as not found
    named = find_images([tmp_path / "d" / "notes.txt"], suffixes=webp)
    assert named == [tmp_path / "d" / "notes.txt"]  # named: content decides


def test_find_images_with_nothing_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="nothing to predict") as info:
        find_images([tmp_path / "empty", str(tmp_path / "*.png")], suffixes=image_suffixes())
    assert info.value.exit_code == 2


def test_the_one_suffix_list_follows_the_decoded_formats() -> None:
    assert image_suffixes() == (".jpg", ".jpeg", ".png")
    assert image_suffixes(allow_webp=True) == (".jpg", ".jpeg", ".png", ".webp")
