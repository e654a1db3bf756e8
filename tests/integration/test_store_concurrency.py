"""Concurrency with real parallel processes, on both backends (GCS: the emulator behind the
precondition-enforcing proxy of conftest, since the emulator alone ignores ifGenerationMatch)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from _store_helpers import ROOT, cli_env, variant

from imgcls.store import Store

# Each process imports the CLI first, then waits for a common start time: the moves really overlap.
_SYNCED = (
    "import sys, time; from imgcls.cli import main; "
    "time.sleep(max(0.0, float(sys.argv[1]) - time.time())); sys.argv = ['imgcls', *sys.argv[2:]]; main()"
)


def _start_together(arg_lists: list[list[str]], delay: float = 3.0) -> list[subprocess.CompletedProcess[str]]:
    start_at = f"{time.time() + delay:.3f}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SYNCED, start_at, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=ROOT,
        )
        for args in arg_lists
    ]
    done = []
    for p, args in zip(procs, arg_lists, strict=True):
        out, err = p.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(args, p.returncode, out, err))
    return done


def test_16_concurrent_alias_moves_exit_0_or_3_and_leave_a_valid_alias_enforcing_proxy(
    store_uri: str, store_bundle: Path, tmp_path: Path
) -> None:
    store = Store.open(store_uri)
    versions = [store.push(variant(store_bundle, tmp_path, i), name="digits").version for i in range(4)]
    store.set_alias("digits", "production", "1")
    valid = {v.digest: v.seq for v in versions}

    seen: list[int] = []
    bad: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # the alias must resolve to a stored version at every moment
        reader = Store.open(store_uri)
        while not stop.is_set():
            try:
                alias = reader.alias("digits", "production")
                if alias is None or valid.get(alias.digest) != alias.seq:
                    bad.append(repr(alias))
                else:
                    seen.append(alias.seq)
            except Exception as exc:
                bad.append(repr(exc))
            time.sleep(0.01)

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        moves = [["models", "alias", store_uri, "digits", str(2 + i % 3), "production"] for i in range(16)]
        results = _start_together(moves)
    finally:
        stop.set()
        reader.join(10)
    codes = [r.returncode for r in results]
    assert set(codes) <= {0, 3}, [(r.returncode, r.stderr) for r in results if r.returncode not in (0, 3)]
    assert 0 in codes
    for r in results:
        if r.returncode == 3:
            assert "was moved by someone else" in r.stderr and "Traceback" not in r.stderr
    final = Store.open(store_uri).alias("digits", "production")
    assert final is not None and valid[final.digest] == final.seq and final.seq in (2, 3, 4)
    assert not bad and seen


def test_concurrent_pushes_get_distinct_sequence_numbers(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    bundles = [variant(store_bundle, tmp_path, i) for i in range(4)]
    pushes = [["push", str(b), "--to", store_uri, "--name", "digits"] for b in [*bundles, bundles[0], bundles[0]]]
    results = _start_together(pushes)
    assert [r.returncode for r in results] == [0] * 6, [r.stderr for r in results]
    versions = Store.open(store_uri).versions("digits")
    assert sorted(v.seq for v in versions) == [v.seq for v in versions]
    assert len(versions) == 4 and len({v.seq for v in versions}) == 4
    assert {v.metrics["variant"] for v in versions} == {0, 1, 2, 3}
    latest = Store.open(store_uri).alias("digits", "latest")
    assert latest is not None and latest.seq == max(v.seq for v in versions)
