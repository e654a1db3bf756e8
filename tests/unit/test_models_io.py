"""Loading a bundle's weights into its architecture: a bundle whose files were re-hashed after an edit (hand-made,
buggy, third-party) passes the sha256 check, and its model section or weights must still be refused by name,
exit 2, never an 'unexpected' error or an allocation of whatever the section asks for."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from imgcls.bundle import write_manifest
from imgcls.errors import BundleError
from imgcls.models.io import load_model


def edited(src: Path, tmp_path: Path, edit: Callable[[dict, Path], None]) -> Path:
    """A copy of bundle ``src``, edited by ``edit(manifest, folder)``, every sha256 written anew."""
    out = tmp_path / "edited"
    shutil.copytree(src, out)
    meta = json.loads((out / "bundle.json").read_text())
    edit(meta, out)
    write_manifest(out, meta, files=sorted(meta["files"]))
    return out


def _truncate(meta: dict, folder: Path) -> None:
    (folder / "weights.safetensors").write_bytes((folder / "weights.safetensors").read_bytes()[:100])


def _huge_header(meta: dict, folder: Path) -> None:
    (folder / "weights.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")


def _kwargs(**kwargs: object) -> Callable[[dict, Path], None]:
    def edit(meta: dict, folder: Path) -> None:
        meta["model"]["kwargs"] = {**meta["model"].get("kwargs", {}), **kwargs}

    return edit


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (_truncate, "is not a readable safetensors file"),
        (_huge_header, "is not a readable safetensors file"),
        (_kwargs(evil=1), r"model section builds no 'resnet8' \(.*unexpected keyword argument 'evil'"),
        (_kwargs(width=100_000), r"do not fit architecture 'resnet8': .* is \[\d+(, \d+)*\] in the file, \[200000"),
        (_kwargs(width=16), r"do not fit architecture 'resnet8'"),
    ],
    ids=["truncated", "huge-header", "unknown-kwarg", "width-100000", "another-width"],
)
def test_a_rehashed_bundle_whose_weights_or_model_section_were_changed_is_refused_by_name(
    random_bundle: Path, tmp_path: Path, edit: Callable[[dict, Path], None], says: str
) -> None:
    # width 100000 allocated 1.4 TB (RuntimeError), the others were 'unexpected SafetensorError/TypeError', exit 1
    with pytest.raises(BundleError, match=says) as info:
        load_model(edited(random_bundle, tmp_path, edit))
    assert info.value.exit_code == 2 and "re-" in (info.value.hint or "")


def test_the_untouched_bundle_loads(random_bundle: Path) -> None:
    model = load_model(random_bundle)
    assert sum(p.numel() for p in model.parameters()) > 0 and not model.training
