"""A bundle is its own content: a listed file reached through a symbolic link out of the bundle is refused.

Before, verification followed the link: a bundle whose ``notes.txt`` was a link to a file elsewhere (with that
file's sha256 in bundle.json) loaded, and ``imgcls push`` uploaded the other file into the store.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imgcls.bundle import load_bundle, read_manifest, sha256_file, write_manifest
from imgcls.errors import BundleError
from imgcls.store import Store


def bundle_with(random_bundle: Path, tmp_path: Path, rel: str) -> Path:
    """A copy of the random bundle that also lists ``rel`` (a small text file for now)."""
    out = tmp_path / "bundle"
    shutil.copytree(random_bundle, out)
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_text("mine")
    meta = read_manifest(out)
    write_manifest(out, meta, [*meta.files, rel])
    return out


def test_a_listed_file_linked_out_of_the_bundle_is_refused_and_never_pushed(
    random_bundle: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not part of any bundle")
    bundle = bundle_with(random_bundle, tmp_path, "notes.txt")
    (bundle / "notes.txt").unlink()
    (bundle / "notes.txt").symlink_to(secret)
    meta = read_manifest(bundle)
    write_manifest(bundle, meta, list(meta.files))  # the manifest lists the linked file's own sha256
    assert read_manifest(bundle).files["notes.txt"] == sha256_file(secret)
    with pytest.raises(BundleError, match=r"notes\.txt, a symbolic link that leads out of the bundle") as info:
        load_bundle(bundle)
    assert info.value.exit_code == 2 and str(secret) not in info.value.message  # nor where it leads
    with pytest.raises(BundleError, match="leads out of the bundle"):
        Store.open(tmp_path / "store").push(bundle, name="digits")
    assert not (tmp_path / "store").exists()


def test_a_folder_linked_out_of_the_bundle_is_refused(random_bundle: Path, tmp_path: Path) -> None:
    bundle = bundle_with(random_bundle, tmp_path, "extra/notes.txt")
    shutil.move(bundle / "extra", tmp_path / "outside")
    (bundle / "extra").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(BundleError, match=r"extra/notes\.txt, a symbolic link that leads out of the bundle"):
        load_bundle(bundle)


def test_links_inside_the_bundle_and_a_linked_bundle_folder_still_load(random_bundle: Path, tmp_path: Path) -> None:
    bundle = bundle_with(random_bundle, tmp_path, "notes.txt")
    os.rename(bundle / "notes.txt", bundle / "real-notes.txt")
    (bundle / "notes.txt").symlink_to("real-notes.txt")  # stays inside: fine
    assert load_bundle(bundle).files["notes.txt"]
    linked = tmp_path / "linked"
    linked.symlink_to(bundle, target_is_directory=True)
    assert load_bundle(linked).digest == load_bundle(bundle).digest


def test_a_listed_path_that_is_not_a_regular_file_says_so(random_bundle: Path, tmp_path: Path) -> None:
    bundle = bundle_with(random_bundle, tmp_path, "notes.txt")
    (bundle / "notes.txt").unlink()
    os.mkfifo(bundle / "notes.txt")  # reading it would block: it is never opened
    with pytest.raises(BundleError, match=r"notes\.txt, which is not a regular file"):
        load_bundle(bundle)
