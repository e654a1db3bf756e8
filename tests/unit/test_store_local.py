"""The local backend's primitives: exclusive create, compare-and-swap under a lock, checksums."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from imgcls.store import Store
from imgcls.store.backend import PreconditionFailed, _crc32c_py, crc32c_update


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c_update(0, b"123456789") == 0xE3069283
    assert _crc32c_py(0, b"123456789") == 0xE3069283
    assert crc32c_update(crc32c_update(0, b"1234"), b"56789") == 0xE3069283


def test_create_only_writes_once_and_never_shows_a_partial_object(tmp_path: Path) -> None:
    backend = Store.open(tmp_path / "s").backend
    backend.write("m/sequence/1", b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        backend.write("m/sequence/1", b"second", if_generation_match=0)
    assert backend.read("m/sequence/1")[0] == b"first"
    assert [p.name for p in (tmp_path / "s" / "m" / "sequence").iterdir()] == ["1"]  # no temp files left


def test_compare_and_swap_has_exactly_one_winner_per_generation(tmp_path: Path) -> None:
    backend = Store.open(tmp_path / "s").backend
    generation = backend.write("m/aliases/prod", b"v0", if_generation_match=0)
    wins: list[int] = []
    barrier = threading.Barrier(16)

    def move(i: int) -> None:
        barrier.wait()
        try:
            backend.write("m/aliases/prod", f"v{i + 1}".encode(), if_generation_match=generation)
            wins.append(i)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=move, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert backend.read("m/aliases/prod")[0] == f"v{wins[0] + 1}".encode()


def test_works_without_google_crc32c(monkeypatch: pytest.MonkeyPatch, random_bundle: Path, tmp_path: Path) -> None:
    """A serve-only install has no google-crc32c: the local store falls back to zlib's crc32 for its checks."""
    import imgcls.store.local as local

    monkeypatch.setattr(local, "has_fast_crc32c", lambda: False)
    store = Store.open(tmp_path / "s")
    from imgcls.bundle import load_bundle

    digest = load_bundle(random_bundle).digest
    store.backend.upload_file(f"m/versions/{digest[:16]}/weights.safetensors", random_bundle / "weights.safetensors")
    result = store.push(random_bundle, name="m")  # completes the "interrupted" push: the checksums agree
    assert result.created
    out = store.pull(result.version, tmp_path / "out")
    assert (out / "weights.safetensors").read_bytes() == (random_bundle / "weights.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("lineage", "expected"),
    [
        ({"wandb": {"run_id": "abc", "project": "p", "entity": "e"}}, {"id": "abc", "project": "p", "entity": "e"}),
        ({"wandb": "e/p/abc"}, {"id": "abc", "project": "p", "entity": "e"}),
        ({"wandb_run_id": "abc", "wandb_project": "p"}, {"id": "abc", "project": "p", "entity": ""}),
        ({"dataset": {"name": "digits"}}, None),
    ],
)
def test_training_run_is_found_in_the_lineage(lineage: dict, expected: dict | None) -> None:
    from imgcls.store.lineage import training_run

    assert training_run(lineage) == expected


def test_a_short_number_is_a_sequence_number_never_a_hash_prefix(random_bundle: Path, tmp_path: Path) -> None:
    """Version '7' must not select version 1 because version 1's hash happens to start with a 7."""
    from imgcls.errors import ImgclsError

    store = Store.open(tmp_path / "s")
    version = store.push(random_bundle, name="m").version
    for short in (version.digest[:1], version.digest[:5]):
        if short == str(version.seq):
            continue
        with pytest.raises(ImgclsError, match=r"has no version|invalid version"):
            store.version("m", short)  # a digit: not found; a hex letter: not a valid selector
    assert store.version("m", version.digest[:6]).seq == version.seq
    assert store.version("m", str(version.seq)).digest == version.digest
