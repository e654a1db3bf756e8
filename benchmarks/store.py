"""Model store: push / pull throughput, no-op re-push, cached resolve, alias move and watch-poll latency.

Both backends side by side: a local folder, and GCS through the real google-cloud-storage client against
``gcp-storage-emulator`` on 127.0.0.1 (the emulator's speed, not GCS's: it is a single-threaded Python server).

    .venv/bin/python -m benchmarks store [-- --mb 32 --repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path


def _bundle(root: Path, mb: int) -> Path:
    """A bundle with one ``mb`` MB weights file (random bytes: the store never parses weights)."""
    from imgcls.bundle import InputSpec, write_manifest

    out = root / f"bundle-{mb}mb"
    out.mkdir(parents=True)
    (out / "weights.safetensors").write_bytes(os.urandom(mb << 20))
    spec = InputSpec(size=(16, 16), channels=1, mean=(0.3,), std=(0.35,))
    meta = {
        "name": "bench",
        "classes": [str(i) for i in range(10)],
        "input": spec.to_dict(),
        "model": {"arch": "resnet8"},
        "metrics": {},
        "lineage": {},
    }
    write_manifest(out, meta, ["weights.safetensors"])
    return out


def _variant(bundle: Path, i: int) -> Path:
    from imgcls.bundle import MANIFEST, Metrics, read_manifest, write_manifest

    dest = bundle.with_name(f"{bundle.name}-v{i}")
    if not dest.exists():
        shutil.copytree(bundle, dest, copy_function=os.link)
        meta = read_manifest(dest)
        (dest / MANIFEST).unlink()
        meta.metrics = Metrics.model_validate({"variant": i})
        write_manifest(dest, meta, list(meta.files))
    return dest


def _median(fn: Callable[[int], None], repeats: int) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _emulator() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    os.environ["STORAGE_EMULATOR_HOST"] = url
    from imgcls.store.gcs import make_client

    make_client().create_bucket("bench")
    return proc, url


def run(backend: str, uri: str, bundle: Path, small: Path, work: Path, repeats: int) -> dict[str, float]:
    from imgcls.store import Store, parse_ref, resolve_model
    from imgcls.store.cache import fetch

    store = Store.open(uri)
    size_mb = (bundle / "weights.safetensors").stat().st_size / (1 << 20)
    counter = iter(range(10_000))

    def push(_: int) -> None:
        store.push(_variant(bundle, next(counter)), name="big")

    def pull(i: int) -> None:
        version = store.resolve(parse_ref(f"{uri}/big@latest"))
        store.pull(version, work / f"{backend}-pull-{i}")

    out = {
        "push_mb_s": size_mb / _median(push, repeats),
        "pull_mb_s": size_mb / _median(pull, repeats),
    }
    store.push(small, name="small")
    out["repush_noop_ms"] = 1000 * _median(lambda _: store.push(small, name="small"), repeats)
    cache = work / f"{backend}-cache"
    ref = f"{uri}/big@latest"
    resolve_model(ref, cache_dir=cache)
    out["resolve_cached_big_ms"] = 1000 * _median(lambda _: resolve_model(ref, cache_dir=cache), repeats)
    small_ref = f"{uri}/small@latest"
    resolve_model(small_ref, cache_dir=cache)
    out["resolve_cached_small_ms"] = 1000 * _median(lambda _: resolve_model(small_ref, cache_dir=cache), repeats)
    seqs = [v.seq for v in store.versions("big")]
    out["alias_move_ms"] = 1000 * _median(
        lambda i: store.set_alias("big", "production", str(seqs[i % len(seqs)])), max(repeats, 2)
    )
    mref = parse_ref(f"{uri}/big@production")
    out["watch_poll_ms"] = 1000 * _median(lambda _: store.resolve(mref), repeats)
    version = store.resolve(mref)
    fetch(store, version, cache_dir=cache)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks store")
    parser.add_argument("--mb", type=int, default=32, help="size of the big bundle's weights file")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="imgcls-bench-store-"))
    proc = None
    try:
        bundle = _bundle(work, args.mb)
        small = _bundle(work / "small", 2)
        proc, _ = _emulator()
        results = {
            "local": run("local", str(work / "store"), bundle, small, work, args.repeats),
            "gcs-emulator": run("gcs", f"gs://bench/{uuid.uuid4().hex[:8]}", bundle, small, work, args.repeats),
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    keys = list(next(iter(results.values())))
    print(f"bundle: {args.mb} MB weights (small: 2 MB); median of {args.repeats} runs")
    print(f"| metric | {' | '.join(results)} |")
    print(f"|---|{'---|' * len(results)}")
    for key in keys:
        print(f"| {key} | {' | '.join(f'{r[key]:.1f}' for r in results.values())} |")


if __name__ == "__main__":
    main()
