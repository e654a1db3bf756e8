"""imgcls.cli._files.find_images: the command line's files, directories and globs -> files to predict."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _as_nobody import as_nobody

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


def test_a_recursive_glob_does_not_follow_a_folder_linked_to_itself(tmp_path: Path) -> None:
    """glob's '**' followed the link down the loop: a.png came back 41 times (d/self/self/.../a.png), each one
    predicted."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.png").write_bytes(b"x")
    (tmp_path / "d" / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "d" / "self").symlink_to(".")
    for pattern in ("d/**", "d/**/*.png"):
        rel = [str(p.relative_to(tmp_path)) for p in find_images([str(tmp_path / pattern)])]
        assert rel == ["d/a.png", "d/sub/b.png"], pattern
    assert find_images([str(tmp_path / "d" / "self" / "*.png")]) == [tmp_path / "d" / "self" / "a.png"]  # named


@pytest.mark.timeout(120)  # a hang guard: the old expansion walked 2**40 paths
def test_a_recursive_glob_ends_with_two_links_up_the_tree(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "d" / "self").symlink_to(".")
    (tmp_path / "d" / "sub" / "up").symlink_to("..")
    assert find_images([str(tmp_path / "d" / "**" / "*.png")]) == [tmp_path / "d" / "sub" / "b.png"]


def test_a_recursive_glob_finds_what_glob_finds_in_a_tree_without_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glob
    import os

    for rel in ["a/1.png", "a/b/2.png", "a/b/c/3.jpg", ".h/x/4.png", "a/.hid/5.png", "a/.6.png", "e/7.png", "8.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for pattern in ["**", "**/*.png", "a/**", "a/**/*.png", "*/**/*.jpg", f"{tmp_path}/**/b/*", "a/**/c", ".h/**"]:
        expected = []
        for m in sorted(glob.glob(pattern, recursive=True)):
            expected += find_images([m]) if os.path.isdir(m) else [Path(m)]
        assert sorted(find_images([pattern])) == sorted(set(expected)), pattern


def test_a_glob_without_a_match_among_other_files_is_kept_to_be_reported(tmp_path: Path) -> None:
    """A missing 'photo[1].png' (a glob to glob: '[1]' is a character class) or 'imgs/*.jpeg' beside other files was
    dropped without a word: predict answered for the others and exited 0."""
    (tmp_path / "a.png").write_bytes(b"x")
    missing, typo = str(tmp_path / "photo[1].png"), str(tmp_path / "imgs" / "*.jpeg")
    assert find_images([tmp_path / "a.png", missing, typo]) == [tmp_path / "a.png", Path(missing), Path(typo)]
    with pytest.raises(UsageError, match="nothing to predict"):  # alone, they are still a usage error
        find_images([missing, typo])


def _lines(root: Path) -> list[str]:
    """What predict's reader says of each entry find_images gives for ``root``."""
    from imgcls.data.decode import read_image_file
    from imgcls.errors import ImageError

    out = []
    for p in find_images([root]):
        try:
            read_image_file(p)
            out.append(f"{p.name} ok")
        except ImageError as e:
            out.append(f"{p.name} {e.code} {e.message.split(': ', 1)[1]}")
    return out


def test_a_fifo_a_dangling_link_and_an_unreadable_folder_each_get_a_line_not_silence(tmp_path: Path) -> None:
    """rglob left them out without a word: predict over the folder exited 0 having never read them."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="imgcls-walk-"))  # outside pytest's 0700 folder: another user walks it
    try:
        root.chmod(0o755)
        (root / "a.png").write_bytes(b"x")
        os.mkfifo(root / "fifo.png")
        (root / "gone.png").symlink_to(root / "nowhere.png")
        (root / "locked").mkdir()
        (root / "locked" / "b.png").write_bytes(b"x")
        (root / "locked").chmod(0)
        lines = as_nobody(lambda: _lines(root))
        assert lines == [
            "a.png ok",
            "fifo.png not_found not a regular file",
            "gone.png not_found no such file",
            "locked not_found a folder that cannot be read (permission denied)",
        ], lines
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)
