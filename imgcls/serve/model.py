"""The model being served and its atomic replacement.

A :class:`ServedModel` is one verified bundle with its onnxruntime :class:`~imgcls.runtime.Predictor` and its
own :class:`~imgcls.serve.batcher.Batcher`. :class:`ModelHolder` owns the current one.

``ModelHolder.swap(ref)`` is THE way to change the model (the admin reload endpoint and the ``--watch`` poller
both call it): the new bundle is resolved, verified, loaded and warmed up *beside* the old one in a worker
thread; only then does ``current`` point at it, in one assignment on the event loop. A request holds the
model it started with (:meth:`ModelHolder.acquire`) until it is answered, so in-flight requests finish on the
old model, whose batcher is closed once its last request is answered. When anything about the new model
fails, the old one keeps serving and the error is raised to the caller (and logged).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgcls.data.decode import sniff_format
from imgcls.data.stats import ImageStats, stats_thumbnail
from imgcls.errors import ConflictError, ImgclsError, UsageError
from imgcls.serve.batcher import Batcher
from imgcls.serve.settings import DEFAULT_MAX_BATCH, DEFAULT_MAX_DELAY_MS, ServeSettings

logger = logging.getLogger(__name__)

LARGE_DECODE_PIXELS = 2_000_000
"""Uploads whose decode would cost more pixels than this take the large-image lane (:class:`PixelBudget`)."""
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_URL_SCHEMES = ("http://", "https://", "ftp://", "ftps://", "s3://", "data:")


@dataclass
class Decoded:
    """One upload after the decoding thread: the model input and what the prediction log needs."""

    array: np.ndarray  # uint8 (H, W, C) at the model's size
    width: int
    height: int
    format: str | None
    nbytes: int
    stats_source: Any = None  # the thumbnail of ``array`` the log's writer computes the statistics from
    stats: ImageStats | None = None
    embedding: list[float] | None = None  # the model's embedding output, set with the answer (drift)


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR, a JPEG's frame header or a WebP's VP8/VP8L/VP8X header, without
    decoding (None: not found)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data.startswith(b"\xff\xd8"):
        pos = 2
        for _ in range(64):  # a few segments precede the frame header; a file with more is not worth scanning
            if pos + 9 > len(data) or data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker in _JPEG_SOF:
                return int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(data[pos + 5 : pos + 7], "big")
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas of a WebP (RFC 9649): the VP8X header's (an animation or alpha: what Pillow decodes), else the
    lossless VP8L or the lossy VP8 frame's own size."""
    chunk = data[12:16]
    if chunk == b"VP8X":  # 24-bit width - 1 and height - 1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:  # 14-bit width - 1, 14-bit height - 1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # a key frame: 14-bit width and height
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


# The cost of an upload in a format the server takes whose size its header does not give (a JPEG with more than 64
# segments before its frame header, a WebP of another chunk layout): it may be as large as --max-pixels allows, so
# it is decoded in the large-image lane with the whole pixel budget, never beside the small ones.
UNKNOWN_SIZE_PIXELS = 1 << 40


def decode_pixels(data: bytes, model_size: tuple[int, int]) -> int | None:
    """About how many pixels decoding ``data`` costs for a model of ``model_size`` (h, w);
    :data:`UNKNOWN_SIZE_PIXELS` for a PNG, JPEG or WebP whose header gives no size; None: no image the server takes
    (it is refused at once by the decoder).

    A JPEG is decoded at reduced scale (up to 1/8) while it stays at least twice the model's size.
    """
    size = image_size(data)
    if size is None:
        return UNKNOWN_SIZE_PIXELS if sniff_format(data) is not None else None
    w, h = size
    if data.startswith(b"\xff\xd8"):
        mh, mw = model_size
        scale = 1
        while scale < 8 and w // (scale * 2) >= 2 * mw and h // (scale * 2) >= 2 * mh:
            scale *= 2
        return (w // scale) * (h // scale)
    return w * h


class PixelBudget:
    """A server-wide cap on the pixels being decoded at once (large uploads only; small ones never wait).

    One client's 6000×6000 uploads then wait for each other, instead of the server holding eight of them in
    memory at once; a request asking for more than the whole budget takes all of it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, pixels: int) -> int:
        cost = min(pixels, self.capacity)
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + cost <= self.capacity)
            self.used += cost
        return cost

    async def release(self, cost: int) -> None:
        async with self._cond:
            self.used -= cost
            self._cond.notify_all()


@dataclass(eq=False)
class ServedModel:
    """A loaded model: predictor, batcher and the identity the API reports."""

    predictor: Any
    batcher: Batcher
    ref: str
    loaded_at: float = field(default_factory=time.time)
    users: int = 0
    retired: bool = False

    def __post_init__(self) -> None:
        bundle = self.predictor.bundle
        self.bundle = bundle
        self.name = str(bundle.name)
        # digest of the manifest: every file's hash is inside, so it names this exact model (computed once)
        self.sha256 = str(bundle.digest)
        from imgcls.store import provenance

        pulled = provenance(bundle.path)  # a copy pulled from a model store records its version beside it
        version = pulled["version"] if pulled else None
        # the store's version when the bundle came from a store, else the first 12 hex digits of the digest
        self.version = str(version) if version is not None else self.sha256[:12]
        self.identity = {"name": self.name, "version": self.version, "sha256": self.sha256}

    def unpack(self, row: np.ndarray, decoded: Decoded) -> np.ndarray:
        """One batcher result row -> the probabilities; an appended embedding goes to ``decoded.embedding``."""
        n = len(self.predictor.classes)
        if row.shape[0] > n:
            decoded.embedding = [round(float(v), 4) for v in row[n:]]
            return row[:n]
        return row

    def describe_public(self) -> dict[str, Any]:
        """What ``GET /v1/model`` shows anyone: what a caller needs to use the model, nothing of the server."""
        return {
            **self.identity,
            "classes": list(self.predictor.classes),
            "input": self.predictor.input.to_dict(),
            "engine": self.predictor.engine.name,
            "precision": self.predictor.precision,
            "provider": self.predictor.provider,
        }

    def describe(self) -> dict[str, Any]:
        """Everything ``GET /v1/model`` shows a caller with the admin token."""
        meta = self.bundle.meta
        return {
            **self.identity,
            "classes": list(self.predictor.classes),
            "input": self.predictor.input.to_dict(),
            "metrics": meta.metrics.to_dict(),
            "lineage": meta.lineage.to_dict(),
            "export": meta.export.to_dict() if meta.export is not None else {},
            "model": meta.model.to_dict(),
            "engine": self.predictor.engine.name,
            "engine_version": self.predictor.engine.version,
            "engine_choice": self.predictor.choice_reason,
            "threads": self.predictor.engine.threads,
            "provider": self.predictor.provider,
            "precision": self.predictor.precision,
            "model_file": self.predictor.model_file,
            "ref": self.ref,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "max_batch": self.batcher.max_batch,
            "max_delay_ms": self.batcher.max_delay_s * 1000.0,
        }

    def decode(self, data: bytes, *, keep_for_stats: bool) -> Decoded:
        """Decode, check and prepare one upload (runs in a decoding thread).

        Raises:
            ImageError: corrupt (400), not JPEG/PNG (415), too many pixels (413).
        """
        image = self.predictor.decode(data)
        width, height = image.info.get("original_size") or image.size  # a JPEG may be decoded at reduced scale
        array = self.predictor.prepare(image)
        decoded = Decoded(array, width, height, sniff_format(data), len(data))
        if keep_for_stats:  # the statistics describe the model's input, as the drift reference's do
            decoded.stats_source = stats_thumbnail(array)
        return decoded

    def close(self) -> None:
        self.batcher.close()


def check_ref(ref: str) -> str:
    """Refuse references that would make the server fetch an arbitrary URL (only bundle dirs and stores), and
    references with a control character: no path or store name holds one, and a NUL made ``os.path.realpath``
    raise ValueError (an admin reload to ``"\\u0000"`` answered 500)."""
    text = str(ref).strip()
    if not text:
        raise UsageError("the model reference is empty", hint="pass a bundle directory or URI/NAME@ALIAS")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError(
            f"the model reference {text[:200]!r} holds a control character",
            hint="pass a bundle directory or a model-store reference (URI/NAME@ALIAS) as plain text",
        )
    if text.lower().startswith(_URL_SCHEMES):
        raise UsageError(
            f"{text!r} is a URL; the server does not fetch URLs",
            hint="pass a bundle directory or a model-store reference (gs://BUCKET/PREFIX/NAME@ALIAS)",
        )
    return text


def _location(ref: str) -> str:
    """Where a reference loads from, as a normalised string: a store root, or a bundle directory's real path."""
    from imgcls.store.refs import looks_like_ref, parse_ref

    text = str(ref).strip()
    if looks_like_ref(text):  # by its spelling only: deciding this must not probe the disk
        store = parse_ref(text).store
        return f"gs://{store.location}" if store.scheme == "gs" else os.path.realpath(store.location)
    return os.path.realpath(os.path.expanduser(text))


def _root(location: str) -> str:
    from imgcls.store.refs import parse_store_uri

    if location.startswith(("gs://", "file://")):
        store = parse_store_uri(location)
        return f"gs://{store.location}" if store.scheme == "gs" else os.path.realpath(store.location)
    return os.path.realpath(os.path.expanduser(location))


def allowed_roots(settings: ServeSettings) -> tuple[str, ...]:
    """Where an admin reload may load from: ``--allow-models``, else the store or directory the server started
    from (the store of a store reference; the folder holding a bundle directory)."""
    if settings.allow_models:
        return tuple(_root(location) for location in settings.allow_models)
    start = _location(settings.model)
    from imgcls.store.refs import looks_like_ref

    return (start if looks_like_ref(settings.model) else os.path.dirname(start),)


def is_allowed(ref: str, roots: tuple[str, ...]) -> bool:
    """True if ``ref`` loads from inside one of ``roots`` (an ill-formed reference is not allowed)."""
    try:
        location = _location(ref)
    except ImgclsError:
        return False
    return any(location == root or location.startswith(root.rstrip("/") + "/") for root in roots)


def load_served(ref: str, settings: ServeSettings, on_batch: Callable[[int, float], None] | None = None) -> ServedModel:
    """Resolve, verify, load and warm up a model with its batcher (blocking; call it off the event loop).

    Raises:
        ImgclsError: a bad reference, a missing/tampered bundle, no ONNX export, CUDA unavailable.
    """
    from imgcls.runtime import Predictor, resolve_model
    from imgcls.runtime.profile import serving_profile

    ref = check_ref(ref)
    path = resolve_model(ref)
    predictor = Predictor.from_bundle(
        path,
        engine=settings.engine,
        device=settings.device,
        precision=settings.precision,
        intra_threads=settings.intra_threads,
        max_pixels=settings.max_pixels,
        spin=False,  # idle onnxruntime threads must not spin on the cores the HTTP and decoding threads need
    )
    profile = serving_profile(predictor.bundle)  # its batching applies unless the flags say otherwise
    max_batch = settings.max_batch or (profile and profile.max_batch) or DEFAULT_MAX_BATCH
    max_delay_ms = settings.max_delay_ms
    if max_delay_ms is None:
        max_delay_ms = profile.max_delay_ms if profile and profile.max_delay_ms is not None else DEFAULT_MAX_DELAY_MS
    h, w = predictor.input.size
    for n in sorted({1, max_batch}):  # first calls allocate: pay that before traffic arrives
        probs = predictor.infer_prepared(np.zeros((n, h, w, predictor.input.channels), dtype=np.uint8))
        if probs.shape != (n, len(predictor.classes)) or not np.all(np.isfinite(probs)):
            raise ImgclsError(f"model {ref} gives unusable outputs on a warm-up batch (shape {probs.shape})")
    batcher = Batcher(
        _packed_infer(predictor),
        max_batch=max_batch,
        max_delay_s=max_delay_ms / 1000.0,
        max_queue=settings.max_queue,
        decode_threads=settings.decode_threads or max(1, (os.cpu_count() or 2) // 2),
        on_batch=on_batch,
        name=f"imgcls-batcher-{predictor.bundle.name}",
    )
    return ServedModel(predictor=predictor, batcher=batcher, ref=ref)


def _packed_infer(predictor: Any) -> Any:
    """The batcher's inference: probabilities, with the embedding output appended to each row when the model
    has one (:meth:`ServedModel.unpack` splits it again), so one model run gives both."""
    if getattr(predictor, "embedding_output", None) is None:
        return predictor.infer_prepared

    def infer(batch: np.ndarray) -> np.ndarray:
        probs, emb = predictor.infer_with_embedding(batch)
        return probs if emb is None else np.concatenate([probs, emb], axis=1)

    return infer


@dataclass
class SwapResult:
    """What :meth:`ModelHolder.swap` did."""

    previous: dict[str, str] | None
    current: dict[str, str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"status": "swapped", "previous": self.previous, "model": self.current, "seconds": self.seconds}


class ModelHolder:
    """Owns the served model; :meth:`swap` replaces it atomically.

    ``on_change(model)`` runs on the event loop after every successful swap (metrics use it).
    """

    def __init__(
        self,
        settings: ServeSettings,
        *,
        loader: Callable[[str], ServedModel],
        on_change: Callable[[ServedModel], None] | None = None,
    ) -> None:
        self.settings = settings
        self.loader = loader
        self.on_change = on_change
        self.current: ServedModel | None = None
        self.swapping = False
        self._lock = asyncio.Lock()

    def install(self, model: ServedModel) -> None:
        """Make ``model`` current (startup); the previous one retires."""
        previous, self.current = self.current, model
        if self.on_change is not None:
            self.on_change(model)
        if previous is not None:
            self._retire(previous)

    def acquire(self) -> ServedModel | None:
        """The current model, held until :meth:`release` (None when no model is loaded)."""
        model = self.current
        if model is not None:
            model.users += 1
        return model

    def release(self, model: ServedModel) -> None:
        model.users -= 1
        if model.retired and model.users == 0:
            model.close()

    def _retire(self, model: ServedModel) -> None:
        model.retired = True
        if model.users == 0:
            model.close()

    async def swap(self, ref: str | None = None) -> SwapResult:
        """Load ``ref`` (default: the current reference again) beside the current model and switch to it.

        This is the hook for every model change: ``POST /v1/admin/reload`` and the ``--watch`` poller.
        Must run on the server's event loop; from another thread use :meth:`swap_threadsafe`.

        Raises:
            ConflictError: another swap is in progress.
            ImgclsError: the new model cannot be used; the current one keeps serving.
        """
        if self._lock.locked():
            raise ConflictError("a model reload is already in progress", hint="wait for it to finish, then retry")
        async with self._lock:
            target = ref if ref is not None else (self.current.ref if self.current else self.settings.model)
            started = time.perf_counter()
            self.swapping = True
            try:
                new = await asyncio.to_thread(self.loader, target)
            except ImgclsError as exc:
                logger.error("model reload to %s failed; still serving the previous model: %s", target, exc)
                raise
            except Exception as exc:  # an unexpected failure must not take the old model down either
                logger.exception("model reload to %s failed; still serving the previous model", target)
                raise ImgclsError(f"loading {target} failed: {type(exc).__name__}: {exc}") from exc
            finally:
                self.swapping = False
            previous = self.current.identity if self.current else None
            self.install(new)
            seconds = round(time.perf_counter() - started, 3)
            logger.info("model swapped: %s -> %s in %.3f s", previous, new.identity, seconds)
            return SwapResult(previous=previous, current=new.identity, seconds=seconds)

    def swap_threadsafe(
        self, loop: asyncio.AbstractEventLoop, ref: str | None = None, timeout: float | None = None
    ) -> SwapResult:
        """:meth:`swap` from a thread that is not the event loop's (a poller), waiting for the result."""
        return asyncio.run_coroutine_threadsafe(self.swap(ref), loop).result(timeout)

    def close(self) -> None:
        if self.current is not None:
            self._retire(self.current)
            self.current = None
