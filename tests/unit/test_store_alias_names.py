"""Aliases that read as version numbers: `NAME@3` is not `NAME:3`, so no alias may be called 3 or v3, and a
reference `NAME@3` that finds no alias says how a version number is written.

Before, `imgcls models alias STORE digits 1 3` created an alias "3" pointing at version 1, beside version 3: two
different versions under `digits@3` and `digits:3`; and `digits@3` answered "no alias '3'" with the hint to
create one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.errors import StoreError, UsageError
from imgcls.store import Store, parse_ref


@pytest.mark.parametrize("alias", ["3", "v3", "0", "v10"])
def test_an_alias_may_not_read_as_a_version_number(random_bundle: Path, tmp_path: Path, alias: str) -> None:
    store = Store.open(tmp_path / "store")
    with pytest.raises(UsageError, match=f"alias '{alias}' reads as a version number") as info:
        store.push(random_bundle, name="digits", aliases=[alias], force=True)
    assert info.value.exit_code == 2 and "release-" in (info.value.hint or "")
    assert store.versions("digits") == []  # refused before the upload
    store.push(random_bundle, name="digits")
    with pytest.raises(UsageError, match="reads as a version number"):
        store.set_alias("digits", alias, "1", force=True)
    assert sorted(store.aliases("digits")) == ["latest"]
    assert store.set_alias("digits", "v3-candidate", "1", force=True).version.seq == 1  # a name is fine


def test_name_at_a_number_points_to_the_colon_form(random_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    store.push(random_bundle, name="digits")
    for alias in ("1", "v1"):
        with pytest.raises(StoreError, match=f"no alias '{alias}'") as info:
            store.resolve(parse_ref(f"{tmp_path / 'store'}/digits@{alias}"))
        assert "digits:1" in (info.value.hint or "")
    assert store.resolve(parse_ref(f"{tmp_path / 'store'}/digits:1")).seq == 1
