"""``folder:PATH`` datasets: one sub-folder per class, optionally under ``train/``, ``val/``, ``test/``.

Layouts:

* ``PATH/<class>/...`` — a deterministic stratified split (seeded) into train / val / test using
  ``data.test_fraction`` and ``data.val_fraction``;
* ``PATH/train/<class>/...`` with ``val/`` (or ``valid/``, ``validation/``) and ``test/`` when present — a
  missing ``val/`` is split off ``train/`` (``data.val_fraction``); a missing ``test/`` means no test split.
  The split folders are found whatever their case (``Train/``, ``TEST/``), and ``training/`` / ``testing/`` are
  ``train/`` / ``test/``; two folders for one split are refused, other folders beside them are named in a warning.

Class names are the sub-folder names of the training folder, sorted; images may sit in nested folders under
their class folder. Hidden files and folders (a leading ``.``) are ignored, as are files directly in ``PATH`` and
what file managers leave behind (``__MACOSX/``, ``Thumbs.db``, ``desktop.ini``, ``@eaDir/``, ...).
Symlinked files and folders are followed, inside the dataset or outside it; a symlink that leads back to a folder
holding it (a loop) is skipped with a warning, and a folder reached twice is read once.

Every other file is decoded by its content with :func:`imgcls.data.decode.decode_image` (JPEG, PNG, WebP) and
prepared with :func:`imgcls.data.transform.prepare`, on a thread pool (Pillow releases the GIL while it
decodes and resizes). Unreadable, corrupt, truncated or unsupported files are skipped and listed in ONE
warning; they are in ``Dataset.skipped``.

Defaults when the configuration leaves them open:

* input size (``data.img_size``): square, with the longer side of the most common native size, capped at
  :data:`MAX_DEFAULT_SIDE` (224) — 28×28 digits stay 28, 32×24 thumbnails become 32, photos become 224;
* channels (``data.channels``): 1 when every image is stored as grayscale (Pillow modes 1, L, LA, I, I;16, F),
  else 3.

Memory: the prepared images are held in RAM as uint8 at model size, N × H × W × C bytes (10,000 images at
224×224×3 = 1.5 GB). Larger folders want an explicit, smaller ``--img-size``; memory-mapping is not done.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from imgcls.bundle import InputSpec
from imgcls.config import DataConfig
from imgcls.data._dataset import Dataset, Split, channel_stats, fingerprint, stratified_split
from imgcls.errors import DataError, ImgclsError, UsageError
from imgcls.text import MAX_CLASS_NAME_CHARS, has_control, printable

logger = logging.getLogger(__name__)

MAX_DEFAULT_SIDE = 224
MAX_LISTED = 50  # skipped files named in the warning; the others are counted (Dataset.skipped has them all)
SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_HINT_LAYOUT = "lay the images out as PATH/<class>/<image> (one sub-folder per class), optionally in train/ val/ test/"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Header:
    size: tuple[int, int]  # (H, W) after EXIF orientation
    gray: bool


def load_folder(spec_text: str, cfg: DataConfig, seed: int, *, workers: int | None = None) -> Dataset:
    """Scan, decode, split and prepare the image folder at ``spec_text`` (the part after ``folder:``).

    Args:
        spec_text: the folder path (``~`` expanded; relative to the working directory).
        cfg: the data configuration (img_size, channels, fractions, interpolation).
        seed: seeds the stratified split.
        workers: decoding threads (default: the number of CPU cores + 2, at most 16).

    Raises:
        DataError: the path is missing or not a folder, holds no images, a single class, or an empty class.
    """
    root = Path(spec_text).expanduser()
    if not spec_text.strip():
        raise DataError("folder: needs a path, e.g. --data folder:./pets", hint=_HINT_LAYOUT)
    if not root.exists():
        raise DataError(f"folder dataset {root} does not exist", hint=f"check the path; {_HINT_LAYOUT}")
    if not root.is_dir():
        raise DataError(f"folder dataset {root} is not a directory", hint=_HINT_LAYOUT)
    root = root.resolve()
    files, labels, split_of, classes = _scan(root)
    workers = workers or min(16, (os.cpu_count() or 1) + 2)

    import warnings
    from functools import partial

    from PIL import Image

    from imgcls.data.decode import _allow_pixels

    _allow_pixels(cfg.max_pixels)  # Pillow's own guard at the configured limit
    with warnings.catch_warnings():  # the limit is checked (and said) per file: no Python warning on stderr
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        headers = _parallel(partial(_read_header, max_pixels=cfg.max_pixels), files, workers)
    skipped: dict[Path, str] = {f: h for f, h in zip(files, headers, strict=True) if isinstance(h, str)}
    sizes = Counter(h.size for h in headers if isinstance(h, _Header))
    if not sizes:
        _warn_skipped(root, skipped)
        raise DataError(
            f"no readable images in {root}: all {len(files)} files were skipped ({_kinds(skipped.values())})",
            hint=_skipped_hint(skipped.values()),
        )
    side = cfg.img_size or _default_side(sizes)
    channels = cfg.channels or (1 if all(h.gray for h in headers if isinstance(h, _Header)) else 3)
    provisional = InputSpec(
        size=(side, side),
        channels=channels,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
        interpolation=cfg.interpolation,
    )

    readable = [i for i, f in enumerate(files) if f not in skipped]
    images = np.empty((len(readable), side, side, channels), dtype=np.uint8)

    def decode_into(slot_index: tuple[int, int]) -> str | None:
        slot, index = slot_index
        return _decode_prepare(files[index], provisional, images, slot, max_pixels=cfg.max_pixels)

    failures = _parallel(decode_into, list(enumerate(readable)), workers)
    for index, failure in zip(readable, failures, strict=True):
        if failure is not None:
            skipped[files[index]] = failure
    ok = np.array([failure is None for failure in failures], dtype=bool)
    kept = [index for index, good in zip(readable, ok, strict=True) if good]
    images = images[ok] if not ok.all() else images
    y = np.asarray([labels[i] for i in kept], dtype=np.int64)
    where = [split_of[i] for i in kept]
    paths = [str(files[i]) for i in kept]
    _warn_skipped(root, skipped)
    sizes = Counter(headers[i].size for i in kept)  # type: ignore[union-attr]

    in_train = np.asarray([s == "train" for s in where], dtype=bool)
    missing = [c for k, c in enumerate(classes) if not np.any(y[in_train] == k)]
    if missing:
        label_of = dict(zip(files, labels, strict=True))
        lost = [why for f, why in skipped.items() if label_of[f] == classes.index(missing[0])]
        raise DataError(
            f"class {_names(missing)} in {root} has no readable images"
            + (f" ({_kinds(lost)}; see the warning)" if lost else ""),
            hint=_skipped_hint(lost) if lost else "add readable JPEG/PNG images to the class folder, or remove it",
        )

    train_idx = np.flatnonzero(in_train)
    val_idx = np.flatnonzero(np.asarray([s == "val" for s in where], dtype=bool))
    test_idx = np.flatnonzero(np.asarray([s == "test" for s in where], dtype=bool))
    split_dirs = _split_dirs(root)
    has_layout = "train" in split_dirs
    has_test = has_layout and "test" in split_dirs
    if not has_layout:  # one pool: test first (its own seed, as for digits), then validation
        rest, test_pos = stratified_split(y[train_idx], cfg.test_fraction, seed + 7919)
        test_idx, train_idx = train_idx[test_pos], train_idx[rest]
        has_test = test_idx.size > 0
    if not val_idx.size:  # no val/ folder (or nothing readable in it): hold out part of train
        keep, held = stratified_split(y[train_idx], cfg.val_fraction, seed)
        train_idx, val_idx = train_idx[keep], train_idx[held]

    def split(idx: np.ndarray) -> Split:
        return Split(images[idx], y[idx], [paths[i] for i in idx])

    tr, va = split(train_idx), split(val_idx)
    te = split(test_idx) if has_test else None
    mean, std = channel_stats(tr.images)
    spec = InputSpec(size=(side, side), channels=channels, mean=mean, std=std, interpolation=cfg.interpolation)
    native = min(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return Dataset(
        name=f"folder:{root}",
        classes=classes,
        input=spec,
        train=tr,
        val=va,
        test=te,
        fingerprint=fingerprint(tr, va, te),
        native_size=native,
        skipped=[str(p) for p in sorted(skipped)],
        native_sizes=dict(sizes),
    )


def check_output_outside(out: Path, data_name: str, flag: str) -> None:
    """UsageError when the output folder ``out`` lies inside the folder dataset ``data_name`` (``folder:PATH``).

    ``imgcls train --data folder:.`` run from the dataset itself would write ``runs/`` into it, and the next run
    would read that folder as a class of its own (its plots and samples as images). A hidden folder (``.runs/``)
    is never read, so it may be inside.
    """
    name = data_name.strip()
    if not name.startswith("folder:"):
        return
    root = Path(name.removeprefix("folder:")).expanduser()
    if not name.removeprefix("folder:").strip() or not root.is_dir():
        return  # the loader says what is wrong with it
    root, where = root.resolve(), Path(out).expanduser().resolve()
    if where != root and root not in where.parents:
        return
    inside = where.relative_to(root).parts
    if inside and inside[0].startswith("."):
        return
    raise UsageError(
        f"{flag} {where} is inside the dataset folder {root}: the next run would read "
        + (f"'{inside[0]}' as a class of its own" if inside else "the run's files as images"),
        hint="write it outside the dataset (e.g. --out ../runs/NAME), or run from another directory",
    )


# -- scanning -----------------------------------------------------------------------------------------------


# What file managers and archivers leave in a folder: macOS zips' __MACOSX/ (AppleDouble ._ files), Windows'
# thumbnail caches and folder settings, a Synology NAS's @eaDir/ thumbnails, recycle bins. Never a class or an image.
_LITTER = frozenset(
    name.lower()
    for name in ("__MACOSX", "Thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "@eaDir", "$RECYCLE.BIN",
                 "System Volume Information", "Icon\r")
)  # fmt: skip


def _visible(path: Path) -> bool:
    return _visible_name(path.name)


def _visible_name(name: str) -> bool:
    """Not hidden (a leading ``.``) and not a file manager's litter (:data:`_LITTER`)."""
    return not name.startswith(".") and name.lower() not in _LITTER


def _split_dirs(root: Path) -> dict[str, Path]:
    """The split folders of ``root`` (``train``, ``val``, ``test``), their names compared without case.

    Raises:
        DataError: two folders for one split (``train/`` and ``Train/``, ``val/`` and ``validation/``).
    """
    found: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if not (_visible(p) and p.is_dir()):
            continue
        for split, names in SPLIT_DIRS.items():
            if p.name.lower() in names:
                found.setdefault(split, []).append(p)
    for split, dirs in found.items():
        if len(dirs) > 1:
            raise DataError(
                f"{root} has {len(dirs)} folders for the {split} split ({_names([d.name for d in dirs])})",
                hint=f"keep one {split} folder: merge the others into it, or rename them with a leading '.'",
            )
    return {split: dirs[0] for split, dirs in found.items()}


def _class_dirs(base: Path) -> list[Path]:
    dirs = sorted((p for p in base.iterdir() if p.is_dir() and _visible(p)), key=lambda p: _nfc(p.name))
    return [p for p in dirs if not _is_loop(p, base.resolve())]


def _nfc(name: str) -> str:
    """A class name in Unicode NFC: the composed ``é`` a keyboard types, also for a folder macOS named ``e`` + ``´``
    (NFD); the train/ val/ test/ folders of one class are matched, and its label written, in this form."""
    import unicodedata

    return unicodedata.normalize("NFC", name)


def _files_under(directory: Path, classes: tuple[Path, ...] = ()) -> list[Path]:
    """Every visible file under ``directory``, sorted. Symlinked folders are followed (a class may gather its images
    from elsewhere), except one that leads back to a folder above it (a loop: named in a warning) or to a folder
    already read by another way (read once). A folder that cannot be read is named in a warning (a class folder
    itself, in an error); a link into another of the dataset's class folders (``classes``: their real paths) is
    refused: its images would be labelled as both classes, and could land in train and test at once."""
    found: list[Path] = []
    unreadable: list[str] = []
    root = directory.resolve()
    walked = {root}

    def refused(exc: OSError) -> None:
        unreadable.append(str(exc.filename))

    for dirpath, dirnames, filenames in os.walk(directory, onerror=refused, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        keep = []
        for name in sorted(d for d in dirnames if _visible_name(d)):
            target = (here / name).resolve()
            if _is_loop(here / name, real) or target in walked:
                continue
            other = next((c for c in classes if c != root and (target == c or c in target.parents)), None)
            if other is not None:
                raise DataError(
                    f"{printable(str(here / name))} is a link into {printable(str(other))}, another class folder: its "
                    "images would be labelled as both classes",
                    hint="remove the link, or copy the images that belong to this class",
                )
            walked.add(target)
            keep.append(name)
        dirnames[:] = keep
        found.extend(here / f for f in sorted(filenames) if _visible_name(f))
    if str(directory) in unreadable:
        raise DataError(
            f"class folder {printable(str(directory))} cannot be read (permission denied)",
            hint="give this user read access to it (chmod -R u+rX), or remove the folder",
        )
    if unreadable:
        logger.warning("skipped %d folder(s) that cannot be read: %s", len(unreadable), _names(unreadable))
    return found


def _is_loop(folder: Path, parent_real: Path) -> bool:
    """Whether ``folder`` (in the folder whose real path is ``parent_real``) leads back to that folder or one above
    it, as a symlink to ``..`` or ``.`` does; such a link is named in a warning."""
    target = folder.resolve()
    if target != parent_real and target not in parent_real.parents:
        return False
    logger.warning("skipped %s: a symlink to %s, which holds it (a loop)", folder, target)
    return True


def _scan(root: Path) -> tuple[list[Path], list[int], list[str], list[str]]:
    """(files, label per file, split per file, class names); the split is train/val/test."""
    split_dirs = _split_dirs(root)
    train_dir = split_dirs.get("train")
    if train_dir is None and split_dirs and len(_class_dirs(root)) == len(split_dirs):
        # only split folders (val/, test/): not classes named like splits beside others (Valid/ and Invalid/)
        found = ", ".join(f"{d.name}/" for d in split_dirs.values())
        raise DataError(f"{root} has {found} but no train/ folder", hint=_HINT_LAYOUT)
    if train_dir is not None:
        in_splits = set(split_dirs.values())
        others = [p.name for p in sorted(root.iterdir()) if _visible(p) and p.is_dir() and p not in in_splits]
        if others:
            logger.warning(
                "ignored folder(s) %s in %s: with split folders (%s) the classes are the folders inside them",
                _names(others),
                root,
                ", ".join(f"{d.name}/" for d in split_dirs.values()),
            )
    base = train_dir or root
    class_dirs = _class_dirs(base)
    if not class_dirs:
        loose = [p for p in base.iterdir() if p.is_file() and _visible(p)]
        if loose:
            raise DataError(
                f"{base} holds {len(loose)} file(s) but no class sub-folders",
                hint=_HINT_LAYOUT,
            )
        raise DataError(f"no images in {base}: it is empty", hint=_HINT_LAYOUT)
    _check_class_names(base, [d.name for d in class_dirs])
    classes = [_nfc(d.name) for d in class_dirs]
    twins = sorted({c for c in classes if classes.count(c) > 1})
    if twins:
        raise DataError(
            f"{base} has class folders that differ only in their Unicode normalisation: "
            + ", ".join(" and ".join(repr(d.name) + f" ({len(d.name)} characters)" for d in class_dirs
                                     if _nfc(d.name) == c) for c in twins),
            hint="merge them into one folder: macOS writes accents decomposed (NFD), most keyboards composed (NFC)",
        )  # fmt: skip
    real_dirs = tuple(d.resolve() for d in class_dirs)
    per_class = {c: _files_under(d, real_dirs) for c, d in zip(classes, class_dirs, strict=True)}
    if not any(per_class.values()):
        raise DataError(f"no images in {base}: the class folders {_names(classes)} are all empty", hint=_HINT_LAYOUT)
    empty = [c for c, fs in per_class.items() if not fs]
    if empty:
        raise DataError(
            f"class folder {_names(empty)} in {base} is empty",
            hint="add images to it, or remove the folder",
        )
    if len(classes) == 1:
        raise DataError(
            f"{base} has a single class ({classes[0]!r}); a classifier needs at least two",
            hint="add one sub-folder per class",
        )
    files: list[Path] = []
    labels: list[int] = []
    splits: list[str] = []
    for k, c in enumerate(classes):
        files.extend(per_class[c])
        labels.extend([k] * len(per_class[c]))
        splits.extend(["train"] * len(per_class[c]))
    index = {c: k for k, c in enumerate(classes)}
    for split in ("val", "test"):
        split_dir = split_dirs.get(split) if train_dir is not None else None
        if split_dir is None:
            continue
        split_classes = _class_dirs(split_dir)
        split_real = tuple(x.resolve() for x in split_classes)
        for d in split_classes:
            if _nfc(d.name) not in index:
                raise DataError(
                    f"{split_dir} has class folder {d.name!r}, which {base} does not have",
                    hint=f"every class in {split_dir.name}/ needs a folder (and images) in {base.name}/",
                )
            fs = _files_under(d, split_real)
            files.extend(fs)
            labels.extend([index[_nfc(d.name)]] * len(fs))
            splits.extend([split] * len(fs))
    return files, labels, splits, classes


def _check_class_names(base: Path, classes: list[str]) -> None:
    """Refuse a class folder whose name is not valid UTF-8 (a Latin-1 ``café`` from an old zip) or holds a control
    character (``cat\x1b[2J``): the name goes into bundle.json, the charts and every prediction, which cannot carry
    an undecodable byte, and a label that moves a terminal's cursor is no label."""
    bad = [c for c in classes if not _is_utf8(c)]
    if bad:
        raise DataError(
            f"class folder {_names(bad, bytes_of=True)} in {printable(str(base))} has a name that is not valid UTF-8",
            hint="rename it in UTF-8, e.g. `convmv -f latin1 -t utf-8 -r --notest PATH` (the convmv package)",
        )
    bad = [c for c in classes if len(c) > MAX_CLASS_NAME_CHARS]  # a file system that allows it (most do not)
    if bad:
        raise DataError(
            f"class folder {_names([c[:60] + ('…' if len(c) > 60 else '') for c in bad])} in {printable(str(base))} "
            f"has a name longer than the {MAX_CLASS_NAME_CHARS} characters a class name may have",
            hint="rename the folder: the class name goes into bundle.json and every prediction",
        )
    bad = [c for c in classes if has_control(c) or "\n" in c or "\t" in c]
    if bad:
        raise DataError(
            f"class folder {_names(bad)} in {printable(str(base))} has a control character in its name "
            "(an escape, a newline, a tab or a bidirectional override)",
            hint="rename the folder: the class name goes into bundle.json and every prediction",
        )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # a byte that is not UTF-8 is a lone surrogate (surrogateescape), which cannot be
    except UnicodeEncodeError:
        return False
    return True


def _names(names: list[str], *, bytes_of: bool = False) -> str:
    """The first ten ``names`` quoted as Python does (a control character as an escape), the rest counted; with
    ``bytes_of``, as the bytes of a file name (``b'caf\\xe9'``)."""
    shown = ", ".join(repr(os.fsencode(n) if bytes_of else n) for n in names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


# -- decoding -----------------------------------------------------------------------------------------------


def _parallel(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    items = list(items)
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgcls-decode") as pool:
        return list(pool.map(fn, items))


def _read_header(path: Path, *, max_pixels: int) -> _Header | str:
    """Size (after EXIF rotation) and grayscale-ness from the header alone, or why the file is not usable."""
    from PIL import Image, UnidentifiedImageError

    from imgcls.data.decode import FORMATS

    too_many = f"the limit is {max_pixels:,} (allow more with --set data.max_pixels=N)"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
            return "not a regular file"
        with Image.open(path, formats=[*FORMATS, "WEBP"]) as img:
            w, h = img.size
            if w * h > max_pixels:
                return f"image too large ({w}×{h} = {w * h:,} pixels); {too_many}"
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90° on load
                w, h = h, w
            return _Header(size=(h, w), gray=img.mode in _GRAY_MODES)
    except UnidentifiedImageError:
        kind = _sniff(path)
        return f"a {kind} image: {_ONLY}" if kind else "not a JPEG, PNG or WebP image"
    except Image.DecompressionBombError:
        return f"image too large (over {2 * max_pixels:,} pixels); {too_many}"
    except Exception as exc:  # one bad file must never stop the loading of thousands
        return f"unreadable ({type(exc).__name__}: {exc})"


def _decode_prepare(path: Path, spec: InputSpec, out: np.ndarray, slot: int, *, max_pixels: int) -> str | None:
    """Decode and prepare one file into ``out[slot]``; the reason it failed, or None."""
    from imgcls.data.decode import decode_image
    from imgcls.data.transform import draft_size, prepare

    try:
        image = decode_image(path, allow_webp=True, draft=draft_size(spec), max_pixels=max_pixels)
        out[slot] = prepare(image, spec)
    except ImgclsError as exc:
        return exc.message.removeprefix(f"{path}: ")
    except Exception as exc:  # one bad file must never stop the loading of thousands
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


_ONLY = "only JPEG, PNG and WebP are read"
# The formats a folder of images is often in that are not read, by their first bytes
_MAGIC = (
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_FTYP = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIC", b"msf1": "HEIC", b"avif": "AVIF", b"avis": "AVIF"}


def _sniff(path: Path) -> str | None:
    """The name of a well-known image format that is not read (BMP, GIF, TIFF, HEIC, ...), from the first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12])
    return None


def _kind(reason: str) -> str:
    """A reason's kind, to count: ``a BMP image: ...`` is ``BMP``, ``unreadable (OSError: ...)`` ``unreadable``."""
    if reason.startswith("a ") and f" image: {_ONLY}" in reason:
        return reason[2:].split(" image: ", 1)[0]
    return reason.split(" (", 1)[0].split(":", 1)[0]


def _kinds(reasons: Iterable[str]) -> str:
    """``2 BMP, 1 unreadable``: the skipped files counted by kind, most first."""
    return ", ".join(f"{n} {kind}" for kind, n in Counter(_kind(r) for r in reasons).most_common())


def _skipped_hint(reasons: Iterable[str]) -> str:
    kinds = {_kind(r) for r in reasons}
    formats = sorted(k for k in kinds if k in {name for _, name in _MAGIC} | set(_FTYP.values()))
    if formats:
        return f"{_ONLY}: convert the {'/'.join(formats)} files, e.g. `mogrify -format png FILE...` (ImageMagick)"
    return "the warning lists each skipped file and why: replace or remove them"


def _warn_skipped(root: Path, skipped: dict[Path, str]) -> None:
    """ONE warning: the first :data:`MAX_LISTED` skipped files with their reasons, the others counted by kind."""
    if not skipped:
        return
    ordered = sorted(skipped.items())
    lines = [f"  {_relative(p, root)}: {why}" for p, why in ordered[:MAX_LISTED]]
    if len(ordered) > MAX_LISTED:
        rest = [why for _, why in ordered[MAX_LISTED:]]
        lines.append(
            f"  … and {len(rest)} more ({_kinds(rest)}): `imgcls data describe --data folder:{root}` lists them all "
            "in describe.json"
        )
    logger.warning("skipped %d unreadable file(s) in %s:\n%s", len(skipped), root, "\n".join(lines))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _default_side(sizes: Counter[tuple[int, int]]) -> int:
    """The longer side of the most common native size (ties: the smaller size), capped at MAX_DEFAULT_SIDE."""
    (h, w), _ = min(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    return max(8, min(MAX_DEFAULT_SIDE, max(h, w)))
