"""Alias moves on W&B artifacts, online: the public API adds the alias to the existing version.

Online W&B needs the network and a key, which tests do not have: this test replaces the ``wandb`` module by a
stand-in that records the API calls (the offline path runs the real wandb in
tests/integration/test_store_wandb.py). It checks which artifact is addressed and that nothing but the alias
changes.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

from imgcls.bundle import canonical_json, sha256_bytes
from imgcls.store import Store
from imgcls.store.lineage import record_key, served_artifact, sync_aliases
from imgcls.store.registry import PROVENANCE, Version


class _Artifact:
    def __init__(self, path: str, type: str) -> None:
        self.path, self.type, self.aliases, self.saved = path, type, ["store-3", "latest"], 0

    def save(self) -> None:
        self.saved += 1


class _Api:
    fetched: ClassVar[list[_Artifact]] = []

    def artifact(self, path: str, type: str | None = None) -> _Artifact:
        art = _Artifact(path, type or "")
        self.fetched.append(art)
        return art


def _store_with_record(tmp_path: Path) -> tuple[Store, Version]:
    store = Store.open(tmp_path / "store")
    version = Version(name="digits", seq=3, digest="ab" * 32, created="")
    record = {"artifact": "digits", "type": "model", "entity": "team", "project": "vision",
              "reference": "file:///srv/store/digits/versions/abab/", "metadata": {}}  # fmt: skip
    store.backend.write(record_key("digits", version.digest), json.dumps(record).encode())
    return store, version


def test_online_alias_move_adds_the_alias_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake: Any = types.ModuleType("wandb")
    fake.Api = _Api
    fake.init = lambda **_: pytest.fail("no run is started online")
    monkeypatch.setitem(sys.modules, "wandb", fake)
    store, version = _store_with_record(tmp_path)
    logged = sync_aliases(store, version, ["production", "latest"], mode="online")
    (art,) = _Api.fetched
    assert (art.path, art.type) == ("team/vision/digits:store-3", "model")
    assert art.aliases == ["store-3", "latest", "production"] and art.saved == 1
    assert logged is not None and logged["artifact"] == "team/vision/digits:store-3"


def test_a_version_without_a_wandb_record_is_left_alone(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    version = Version(name="digits", seq=1, digest="cd" * 32, created="")
    assert sync_aliases(store, version, ["production"], mode="online") is None  # wandb is not even imported


def test_a_served_copy_from_the_store_names_its_artifact(tmp_path: Path) -> None:
    store, version = _store_with_record(tmp_path)
    bundle = tmp_path / "cache" / "digits-3"
    bundle.mkdir(parents=True)
    meta = {  # a minimal valid manifest: the side file is only believed for a bundle that loads
        "format": "imgcls.bundle/1.1",
        "name": "digits",
        "classes": ["0", "1"],
        "input": {"size": [8, 8], "channels": 1, "mean": [0.5], "std": [0.5]},
        "model": {"arch": "resnet8"},
        "files": {},
    }
    (bundle / "bundle.json").write_bytes(canonical_json(meta))
    digest = sha256_bytes(canonical_json(meta))  # the provenance side file must describe this very bundle
    store.backend.write(record_key("digits", digest), store.backend.read(record_key("digits", version.digest))[0])
    side = {"store": str(store.uri), "name": "digits", "version": 3, "digest": digest}
    (bundle / PROVENANCE).write_text(json.dumps(side))
    assert served_artifact(bundle) == {
        "store": str(store.uri),
        "store_name": "digits",
        "store_version": 3,
        "artifact": "team/vision/digits:store-3",
    }
    (bundle / PROVENANCE).unlink()
    assert served_artifact(bundle) is None
