"""``folder:PATH`` datasets built in tmp_path from real PNG/JPEG files."""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from _as_nobody import as_nobody
from PIL import Image

from imgcls.config import DataConfig
from imgcls.data.datasets import load_dataset
from imgcls.data.folder import MAX_DEFAULT_SIDE
from imgcls.errors import DataError

COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def save_image(path: Path, color: tuple[int, int, int], *, size: tuple[int, int] = (24, 24), mode: str = "RGB") -> None:
    """A real image file: a noisy colour patch, format from the suffix."""
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    w, h = size
    arr = np.clip(np.asarray(color) + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_folder(root: Path, per_class: int = 10, classes: tuple[str, ...] = ("cat", "dog", "fox"), **kw) -> Path:
    for c in classes:
        for i in range(per_class):
            save_image(root / c / f"{c}_{i:02d}.{'png' if i % 2 else 'jpg'}", COLORS.get(c, (128, 128, 128)), **kw)
    return root


def _load(root: Path, seed: int = 0, **cfg) -> object:
    return load_dataset(DataConfig(name=f"folder:{root}", **cfg), seed=seed)


def test_flat_folder_is_split_stratified_and_labelled_by_folder_name(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    ds = _load(root)
    assert ds.classes == ["cat", "dog", "fox"]
    assert ds.name == f"folder:{root.resolve()}"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 3, 3)
    for split in (ds.train, ds.val, ds.test):
        assert np.bincount(split.labels, minlength=3).min() >= 1  # stratified: every class in every split
        for path, label in zip(split.paths, split.labels, strict=True):
            assert Path(path).parent.name == ds.classes[label]
    assert ds.input.size == (24, 24) and ds.input.channels == 3
    # the prepared pixels are the files' own: red cats have a high mean red channel
    cats = ds.train.images[ds.train.labels == 0].reshape(-1, 3).mean(axis=0)
    assert cats[0] > 150 and cats[1] < 90


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    a, b, c = _load(root, seed=1), _load(root, seed=1), _load(root, seed=2)
    assert a.test.paths == b.test.paths and a.val.paths == b.val.paths and a.fingerprint == b.fingerprint
    assert a.test.paths != c.test.paths or a.val.paths != c.val.paths
    assert set(a.train.paths) | set(a.val.paths) | set(a.test.paths) == set(c.train.paths) | set(c.val.paths) | set(
        c.test.paths
    )


def test_train_val_test_subfolders_are_used_as_given(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_folder(root / "train", per_class=6)
    make_folder(root / "val", per_class=2)
    make_folder(root / "test", per_class=3, classes=("cat", "dog"))  # a class may be missing from test/
    ds = _load(root)
    assert ds.classes == ["cat", "dog", "fox"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 6)
    assert all("/train/" in p for p in ds.train.paths) and all("/test/" in p for p in ds.test.paths)


def test_train_and_test_without_val_holds_out_validation_from_train(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_folder(root / "train", per_class=10)
    make_folder(root / "test", per_class=2)
    ds = _load(root, val_fraction=0.2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 6)
    assert all("/train/" in p for p in ds.val.paths)


def test_train_only_layout_has_no_test_split(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_folder(root / "train", per_class=10)
    ds = _load(root)
    assert ds.test is None and len(ds.val) == 3 and ds.eval_split is ds.val


def test_corrupt_truncated_and_non_image_files_are_skipped_and_listed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_folder(tmp_path / "pets")
    good = (root / "cat" / "cat_01.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage" * 10)
    (root / "fox" / "empty.png").write_bytes(b"")
    (root / "fox" / "vector.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    os.mkfifo(root / "fox" / "pipe.png")  # would block a reader forever
    with caplog.at_level(logging.WARNING, logger="imgcls.data.folder"):
        ds = _load(root)
    skipped = sorted(Path(p).name for p in ds.skipped)
    assert skipped == ["empty.png", "fake.jpg", "notes.txt", "pipe.png", "truncated.png", "vector.svg"]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "skipped 6 unreadable file(s)" in text
    for name in skipped:
        assert name in text


def test_hidden_files_and_folders_are_ignored_and_nested_folders_are_read(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", per_class=4)
    (root / ".cache").mkdir()
    save_image(root / ".cache" / "x.png", (0, 0, 0))
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1\2")
    save_image(root / "cat" / ".hidden" / "y.png", (0, 0, 0))
    save_image(root / "dog" / "more" / "deeper" / "z.png", COLORS["dog"])
    (root / "README.md").write_text("top-level files are not images of a class")
    ds = _load(root)
    assert ds.classes == ["cat", "dog", "fox"] and not ds.skipped
    all_paths = ds.train.paths + ds.val.paths + ds.test.paths
    assert len(all_paths) == 13 and any(p.endswith("deeper/z.png") for p in all_paths)


def test_default_channels_is_1_when_every_image_is_grayscale(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "gray", per_class=4, mode="L")
    ds = _load(root)
    assert ds.input.channels == 1 and ds.train.images.shape[-1] == 1 and len(ds.input.mean) == 1
    save_image(root / "cat" / "colour.png", COLORS["cat"])
    assert _load(root).input.channels == 3


def test_default_size_is_the_most_common_long_side_capped(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "mixed", per_class=4, size=(40, 30))
    save_image(root / "cat" / "odd.png", COLORS["cat"], size=(64, 64))
    ds = _load(root)
    assert ds.input.size == (40, 40)
    assert ds.native_size == (30, 40) and ds.native_sizes == {(30, 40): 12, (64, 64): 1}
    big = make_folder(tmp_path / "big", per_class=2, size=(300, 260))
    assert _load(big).input.size == (MAX_DEFAULT_SIDE, MAX_DEFAULT_SIDE)
    assert _load(big, img_size=32, channels=1).train.images.shape[1:] == (32, 32, 1)


def test_real_photos_are_prepared_with_the_eval_transform(tmp_path: Path) -> None:
    from sklearn.datasets import load_sample_images

    from imgcls.data.transform import prepare

    photos = load_sample_images().images  # china.jpg and flower.jpg, 427×640 RGB
    root = tmp_path / "photos"
    for name, photo in zip(("china", "flower"), photos, strict=True):
        for i in range(3):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo[i * 40 : i * 40 + 300, i * 60 : i * 60 + 400]).save(root / name / f"{i}.jpg")
    ds = _load(root, img_size=48, val_fraction=0.0, test_fraction=0.0)
    assert len(ds.train) == 6 and ds.input.size == (48, 48)
    first = ds.train.paths[0]
    from imgcls.data.decode import decode_image
    from imgcls.data.transform import draft_size

    # the one transform decodes a JPEG at reduced scale (twice the model's size), everywhere
    np.testing.assert_array_equal(
        ds.train.images[0], prepare(decode_image(first, draft=draft_size(ds.input)), ds.input)
    )
    full = prepare(decode_image(first), ds.input).astype(np.int16)  # and that is close to a full decode
    assert np.abs(ds.train.images[0].astype(np.int16) - full).mean() < 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "does not exist"),
        (lambda r: r.write_text("x"), "is not a directory"),
        (lambda r: r.mkdir(), "it is empty"),
        (lambda r: (r / "a").mkdir(parents=True) or (r / "b").mkdir(), "are all empty"),
        (lambda r: make_folder(r, per_class=2, classes=("cat",)), "single class ('cat')"),
        (lambda r: make_folder(r, per_class=2, classes=("cat", "dog")) and (r / "owl").mkdir(), "'owl'"),
        (lambda r: r.mkdir() or save_image(r / "loose.png", (1, 2, 3)), "no class sub-folders"),
    ],
    ids=["missing", "not-a-dir", "empty", "empty-classes", "single-class", "empty-class", "no-class-folders"],
)
def test_unusable_folders_are_clear_data_errors(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError) as info:
        _load(root)
    assert message in info.value.message
    assert info.value.exit_code == 2 and info.value.hint


def test_a_class_whose_every_file_is_unreadable_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"))
    (root / "owl").mkdir()
    (root / "owl" / "a.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"class 'owl' .* has no readable images"):
        _load(root)


def test_val_class_missing_from_train_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_folder(root / "train", per_class=3, classes=("cat", "dog"))
    make_folder(root / "val", per_class=1, classes=("cat", "owl"))
    with pytest.raises(DataError, match="'owl'"):
        _load(root)


def test_native_size_follows_exif_orientation(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"), size=(20, 30))
    img = Image.new("RGB", (30, 20), COLORS["cat"])  # stored 30 wide, 20 high; orientation 6 shows it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(root / "cat" / "rotated.jpg", exif=exif)
    ds = _load(root)
    assert ds.native_sizes == {(30, 20): 7}  # (H, W): the rotated photo counts as 30 high, like the others


@pytest.mark.parametrize(
    ("train", "val", "test"),
    [
        ("Train", "Validation", "Test"),
        ("TRAIN", "VAL", "TEST"),
        ("Training", None, "Testing"),
        ("train", "Valid", "Test"),
    ],
)
def test_split_folders_are_found_whatever_their_case(tmp_path: Path, train: str, val: str | None, test: str) -> None:
    # Kaggle-style Train/ Test/ (or Training/ Testing/) were taken for classes: a "Train vs Test" classifier
    root = tmp_path / "pets"
    make_folder(root / train, per_class=6, classes=("cat", "dog"))
    if val is not None:
        make_folder(root / val, per_class=2, classes=("cat", "dog"))
    make_folder(root / test, per_class=3, classes=("cat", "dog"))
    ds = _load(root)
    assert ds.classes == ["cat", "dog"]
    assert len(ds.test) == 6 and all(f"/{test}/" in p for p in ds.test.paths)
    assert all(f"/{train}/" in p for p in ds.train.paths)
    if val is not None:
        assert len(ds.train) == 12 and len(ds.val) == 4 and all(f"/{val}/" in p for p in ds.val.paths)


def test_two_folders_for_one_split_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_folder(root / "train", per_class=3, classes=("cat", "dog"))
    make_folder(root / "Train", per_class=3, classes=("cat", "dog"))
    with pytest.raises(DataError, match=r"2 folders for the train split \('Train', 'train'\)") as info:
        _load(root)
    assert info.value.exit_code == 2 and info.value.hint


def test_folders_beside_the_split_folders_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "pets"
    make_folder(root / "train", per_class=4, classes=("cat", "dog"))
    make_folder(root / "test", per_class=2, classes=("cat", "dog"))
    make_folder(root / "extra", per_class=2, classes=("owl",))
    with caplog.at_level(logging.WARNING, logger="imgcls.data.folder"):
        ds = _load(root)
    assert ds.classes == ["cat", "dog"]
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "'extra'" in text and "ignored" in text


def test_classes_named_like_a_split_beside_other_classes_are_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signatures", per_class=4, classes=("Invalid", "Valid"))
    assert _load(root).classes == ["Invalid", "Valid"]
    root = tmp_path / "splits-only"
    make_folder(root / "val", per_class=2, classes=("cat", "dog"))
    make_folder(root / "Test", per_class=2, classes=("cat", "dog"))
    with pytest.raises(DataError, match="has Test/, val/ but no train/ folder"):
        _load(root)


def test_a_class_folder_name_that_is_not_utf8_is_refused_before_training(tmp_path: Path) -> None:
    # a Latin-1 'café' from an old zip: the run trained, then died drawing the confusion matrix (exit 1)
    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"))
    os.rename(root / "cat", os.fsdecode(os.fsencode(root) + b"/caf\xe9"))
    with pytest.raises(DataError, match=r"class folder b'caf\\xe9' .* not valid UTF-8") as info:
        _load(root)
    assert info.value.exit_code == 2 and "convmv" in info.value.hint


@pytest.mark.parametrize("name", ["b\x1b[2Jird", "o\rwl", "new\nline", "t\tab", "rtl\u202etac"])
def test_a_class_folder_with_a_control_character_is_refused_before_training(tmp_path: Path, name: str) -> None:
    # the name becomes a label in bundle.json and every prediction: one that clears a terminal is no label
    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"))
    os.rename(root / "cat", root / name)
    with pytest.raises(DataError, match="has a control character in its name") as info:
        _load(root)
    assert repr(name) in info.value.message and info.value.exit_code == 2 and "rename" in (info.value.hint or "")


def test_a_class_folder_name_longer_than_a_label_may_be_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ext4 stops a name at 255 bytes, which is the limit: the file systems that allow more (a network share) had
    # the run train, then its bundle refuse the name at the end. Lowered here, where no name can be longer.
    from imgcls.data import folder

    monkeypatch.setattr(folder, "MAX_CLASS_NAME_CHARS", 10)
    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "a-long-bird-name"))
    with pytest.raises(DataError, match=r"class folder 'a-long-bird-name' .* longer than the 10 characters"):
        _load(root)


def test_symlinked_folders_are_followed_and_loops_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a symlinked sub-folder of a class was silently left out: cat/flickr -> /data/flickr/cats lost its images
    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"))
    elsewhere = make_folder(tmp_path / "elsewhere", per_class=5, classes=("more_cats", "owls"))
    os.symlink(elsewhere / "more_cats", root / "cat" / "flickr")  # a folder outside the dataset
    os.symlink(elsewhere / "owls", root / "owl")  # a class folder outside the dataset
    os.symlink("..", root / "cat" / "up")  # loops: the dataset, the class itself
    os.symlink(".", root / "dog" / "self")
    os.symlink(root, root / "everything")  # a "class" that is the dataset itself
    save_image(root / "cat" / "real" / "x.png", COLORS["cat"])
    os.symlink(root / "cat" / "real", root / "cat" / "again")  # the same folder twice: read once
    with caplog.at_level(logging.WARNING, logger="imgcls.data.folder"):
        ds = _load(root, val_fraction=0.0, test_fraction=0.0)
    assert ds.classes == ["cat", "dog", "owl"]
    counts = dict(zip(ds.classes, np.bincount(ds.train.labels).tolist(), strict=True))
    assert counts == {"cat": 3 + 5 + 1, "dog": 3, "owl": 5}
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for link in ("cat/up", "dog/self", "everything"):
        assert link in text
    assert "loop" in text


def test_the_litter_of_macos_windows_and_nas_file_managers_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a zip made on a Mac unpacks a __MACOSX/ of AppleDouble files beside the classes: it was an empty class (fatal)
    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"))
    for where in (root / "__MACOSX" / "cat", root / "cat" / "__MACOSX"):
        where.mkdir(parents=True)
        (where / "._cat_00.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    (root / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 60)
    (root / "dog" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (root / "@eaDir" / "x.jpg").mkdir(parents=True)  # a Synology NAS's thumbnails, beside the classes and inside
    save_image(root / "@eaDir" / "x.jpg" / "SYNOFILE_THUMB_M.jpg", (0, 0, 0))
    save_image(root / "dog" / "@eaDir" / "dog_00.jpg" / "SYNOFILE_THUMB_M.jpg", (0, 0, 0))
    with caplog.at_level(logging.WARNING, logger="imgcls.data.folder"):
        ds = _load(root)
    assert ds.classes == ["cat", "dog"] and not ds.skipped
    assert len(ds.train) + len(ds.val) + len(ds.test) == 6
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_photos_over_the_pixel_limit_can_be_allowed_with_data_max_pixels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a folder of 45-61 MP camera photos was skipped whole (limit 40 MP) and train had no way to allow them
    root = make_folder(tmp_path / "photos", per_class=2, classes=("cat", "dog"), size=(40, 30))
    Image.new("RGB", (300, 200), COLORS["cat"]).save(root / "cat" / "big.jpg")  # 60,000 pixels
    with caplog.at_level(logging.WARNING, logger="imgcls.data.folder"):
        ds = _load(root, max_pixels=50_000)
    assert [Path(p).name for p in ds.skipped] == ["big.jpg"]
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "300×200 = 60,000 pixels" in text and "data.max_pixels" in text
    ds = _load(root, max_pixels=60_000)
    assert not ds.skipped and len(ds.train) + len(ds.val) + len(ds.test) == 5


def test_a_decompression_bomb_is_skipped_without_a_python_warning(tmp_path: Path) -> None:
    import warnings

    root = make_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    Image.new("1", (7000, 6000)).save(root / "cat" / "bomb.png")  # 42 MP in a few kB
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _load(root)
    assert [Path(p).name for p in ds.skipped] == ["bomb.png"]
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]  # reached stderr


def test_images_of_other_formats_are_named_with_the_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a folder of BMP files ended in "all 6 files were skipped" with the hint to lay out class folders
    root = tmp_path / "scans"
    for c in ("cat", "dog"):
        for i, ext in enumerate(("bmp", "gif", "tif")):
            save_image(root / c / f"{i}.{ext}", COLORS[c])
    (root / "dog" / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="imgcls.data.folder"), pytest.raises(DataError) as info:
        _load(root)
    assert "all 7 files were skipped" in info.value.message
    assert "2 BMP, 2 GIF, 2 TIFF, 1 HEIC" in info.value.message
    assert "convert" in info.value.hint and "layout" not in info.value.hint and "sub-folder" not in info.value.hint
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "cat/0.bmp: a BMP image" in text and "dog/photo.heic: a HEIC image" in text
    make_folder(root, per_class=2, classes=("cat", "dog"))  # one class of BMPs only: named with its formats
    for i in range(2):
        save_image(root / "owl" / f"{i}.bmp", (9, 9, 9))
    with pytest.raises(DataError, match=r"class 'owl' .* has no readable images \(2 BMP; see the warning\)") as info:
        _load(root)
    assert "convert" in info.value.hint


def test_the_skipped_warning_is_bounded_and_counts_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a sidecar .json per image (labelling tools write them) made a warning of one line per file: thousands
    from imgcls.data.folder import MAX_LISTED

    root = make_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"))
    for i in range(MAX_LISTED + 30):
        (root / "cat" / f"cat_{i:03d}.json").write_text("{}")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with caplog.at_level(logging.WARNING, logger="imgcls.data.folder"):
        ds = _load(root)
    assert len(ds.skipped) == MAX_LISTED + 31  # every one is still in Dataset.skipped (describe.json)
    (text,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"skipped {MAX_LISTED + 31} unreadable file(s)" in text
    assert len(text.splitlines()) == 1 + MAX_LISTED + 1
    assert f"and {31} more" in text and "imgcls data describe" in text


def test_an_output_inside_the_dataset_folder_is_refused(tmp_path: Path) -> None:
    # `imgcls train --data folder:.` run from the dataset: its runs/ folder became a class of the next run
    from imgcls.data.folder import check_output_outside
    from imgcls.errors import UsageError

    root = make_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    for out in (root / "runs" / "x", root, root / "cat" / "report"):
        with pytest.raises(UsageError, match=r"is inside the dataset folder") as info:
            check_output_outside(out, f"folder:{root}", "--out")
        assert info.value.exit_code == 2 and "outside" in info.value.hint
    check_output_outside(tmp_path / "runs" / "x", f"folder:{root}", "--out")  # beside it: fine
    check_output_outside(root / ".runs" / "x", f"folder:{root}", "--out")  # hidden: never read as data
    check_output_outside(root / "runs", "digits", "--out")  # not a folder dataset
    check_output_outside(root / "runs", f"folder:{tmp_path / 'missing'}", "--out")  # the loader will say


def test_class_names_are_compared_and_kept_in_unicode_nfc(tmp_path: Path) -> None:
    # macOS writes 'café' decomposed (NFD), a Linux keyboard composed (NFC): the same name looked different,
    # "val has class folder 'café', which train does not have"
    import unicodedata

    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    assert nfd != nfc
    root = tmp_path / "drinks"
    make_folder(root / "train", per_class=4, classes=(nfd, "tea"))
    make_folder(root / "val", per_class=2, classes=(nfc, "tea"))
    ds = _load(root)
    assert ds.classes == [nfc, "tea"]  # the label a prediction carries is the composed form a user types
    assert len(ds.val) == 4 and np.bincount(ds.val.labels).tolist() == [2, 2]
    both = make_folder(tmp_path / "both", per_class=2, classes=(nfd, nfc, "tea"))
    with pytest.raises(DataError, match=r"differ only in their Unicode normalisation") as info:
        _load(both)
    assert info.value.exit_code == 2 and "merge" in info.value.hint


def test_a_link_from_one_class_folder_into_another_is_refused(tmp_path: Path) -> None:
    """dog/more -> ../cat labelled cat's images as dog too: 30 images from 20 files, the same file possibly in train
    and in test."""
    root = make_folder(tmp_path / "pets", per_class=4, classes=("cat", "dog"))
    (root / "dog" / "more").symlink_to(root / "cat")
    with pytest.raises(DataError, match=r"dog/more is a link into .*cat, another class folder") as info:
        _load(root)
    assert info.value.exit_code == 2 and "remove the link" in (info.value.hint or "")
    (root / "dog" / "more").unlink()
    (root / "dog" / "more").symlink_to(tmp_path)  # a folder above: a loop, skipped with a warning as before
    assert len(_load(root).classes) == 2


def test_a_class_folder_that_cannot_be_read_is_named_so_not_empty() -> None:
    """'class folder 'dog' ... is empty; add images to it' for a folder of images this user may not read; and an
    unreadable folder inside a class was left out without a word (unreadable files were listed in a warning)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="imgcls-perm-"))  # outside pytest's 0700 folder: nobody walks it
    try:
        base.chmod(0o755)
        root = make_folder(base / "pets", per_class=4, classes=("cat", "dog"))
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (root / "dog").chmod(0)
        said = as_nobody(lambda: _load(root), (DataError,))
        assert "class folder" in said and "dog cannot be read (permission denied)" in said, said
        (root / "dog").chmod(0o755)
        (root / "dog" / "more").mkdir()
        make_folder(root / "dog" / "more", per_class=2, classes=("x",))
        (root / "dog" / "more").chmod(0)

        def warnings() -> list[str]:
            said: list[str] = []
            handler = logging.Handler(logging.WARNING)
            handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger("imgcls.data.folder").addHandler(handler)
            try:
                _load(root)
            finally:
                logging.getLogger("imgcls.data.folder").removeHandler(handler)
            return said

        said = as_nobody(warnings, (DataError,))  # it trains on the rest, and says what it skipped
        assert any("skipped 1 folder(s) that cannot be read" in w and "dog/more" in w for w in said), said
    finally:
        for p in [base, *base.rglob("*")] if base.exists() else []:
            with contextlib.suppress(OSError):
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
