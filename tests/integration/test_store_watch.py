"""AliasWatcher: continuous delivery from an alias, standalone (the server wiring is tested with serve)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from _store_helpers import flip_stored_byte, variant

from imgcls.bundle import load_bundle
from imgcls.errors import UsageError
from imgcls.store import AliasWatcher, Store


def _wait(cond, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_watcher_deploys_moves_refuses_bad_versions_and_recovers(
    store_uri: str, store_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(store_uri)
    versions = [store.push(variant(store_bundle, tmp_path, i), name="digits").version for i in range(1, 5)]
    store.set_alias("digits", "production", "1")
    deployed: list[Path] = []
    refused: list[int] = []

    def swap(path: Path) -> None:
        if load_bundle(path).metrics.extra("variant") == 4:  # this one "fails to load" in the server
            raise RuntimeError("warm-up gave NaNs")
        deployed.append(path)

    watcher = AliasWatcher(
        f"{store_uri}/digits@production",
        60,
        swap,
        on_refused=lambda v, exc: refused.append(v.seq),
        cache_dir=tmp_path / "cache",
    )
    watcher.start()
    try:
        assert watcher.current == versions[0]
        assert watcher.poll() is None and deployed == []  # no move, nothing to do

        store.set_alias("digits", "production", "2")
        assert watcher.poll() == versions[1]
        assert load_bundle(deployed[-1]).digest == versions[1].digest  # verified local copy

        flip_stored_byte(store_uri, versions[2].key, "weights.safetensors")
        store.set_alias("digits", "production", "3")
        with caplog.at_level(logging.ERROR, logger="imgcls.store.watcher"):
            assert watcher.poll() is None
        assert "refused version digits:3" in caplog.text and "still serving digits:2" in caplog.text
        assert watcher.current == versions[1] and watcher.stats.refused == 1 and refused == [3]
        assert watcher.poll() is None and watcher.stats.refused == 1  # not retried until the alias moves

        store.set_alias("digits", "production", "4")
        assert watcher.poll() is None and refused == [3, 4] and watcher.current == versions[1]

        store.set_alias("digits", "production", "1")  # roll back
        assert watcher.poll() == versions[0]
        assert [load_bundle(p).metrics.extra("variant") for p in deployed] == [2, 1]
        assert watcher.stats.deployed == 2
    finally:
        watcher.stop()


def test_watcher_thread_follows_the_alias_and_survives_poll_errors(
    store_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_uri = str(tmp_path / "store")
    store = Store.open(store_uri)
    store.push(variant(store_bundle, tmp_path, 1), name="digits")
    v2 = store.push(variant(store_bundle, tmp_path, 2), name="digits").version
    store.set_alias("digits", "production", "1")
    deployed: list[Path] = []
    with AliasWatcher(f"{store_uri}/digits@production", 0.05, deployed.append, cache_dir=tmp_path / "c") as watcher:
        alias_file = tmp_path / "store" / "digits" / "aliases" / "production"
        good = alias_file.read_bytes()
        alias_file.write_bytes(b"{not json")  # a broken read: logged, retried
        assert _wait(lambda: watcher.stats.poll_errors > 0)
        alias_file.write_bytes(good)
        store.set_alias("digits", "production", "2")
        assert _wait(lambda: len(deployed) == 1)
    assert watcher.current == v2 and load_bundle(deployed[0]).digest == v2.digest
    assert "poll failed" in caplog.text


def test_watch_needs_an_alias_and_a_positive_interval(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs an alias"):
        AliasWatcher(f"{tmp_path}/digits:3", 30, print)
    with pytest.raises(UsageError, match="positive"):
        AliasWatcher(f"{tmp_path}/digits@production", 0, print)
