"""The model registry over a backend: immutable versions, sequence numbers, aliases, push and pull.

Layout under the store root::

    <name>/versions/<id>/<bundle files…>     the bundle, uploaded create-only (id = first 16 hex of its digest)
    <name>/versions/<id>/bundle.json         the manifest, uploaded after every file it lists
    <name>/versions/<id>/version.json        the commit record (sequence number, digest, created, metrics)
    <name>/sequence/<n>                      claims sequence number n for a digest (create-only)
    <name>/aliases/<alias>                   {"version": n, "digest": …}; moved by compare-and-swap

A version exists once its ``version.json`` exists; a push interrupted before that leaves only unreferenced
objects, and pushing again completes it. The *digest* of a version is the sha256 of the bundle's canonical
manifest, which lists the sha256 of every file: it identifies the exact content, so pushing an identical bundle
again finds the existing version and changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls.bundle import (
    MANIFEST,
    Bundle,
    BundleMeta,
    canonical_json,
    load_bundle,
    parse_manifest,
    sha256_bytes,
    validate_rel_path,
    verify_files,
)
from imgcls.errors import BundleError, ConflictError, StoreError, UsageError
from imgcls.fsio import fsync_tree, staging_dir
from imgcls.store.backend import Backend, ContentChanged, PreconditionFailed, Progress
from imgcls.store.promotion import Requirement, check_promotion
from imgcls.store.refs import (
    DIGEST_PREFIX_RE,
    NAME_RE,
    SEQ_RE,
    ModelRef,
    StoreURI,
    check_store_key,
    parse_store_uri,
    validate_name,
    validate_version,
)

logger = logging.getLogger(__name__)

VERSION_RECORD = "version.json"
PROVENANCE = ".imgcls-store.json"  # side file in cached copies: which store version this directory holds
ID_LEN = 16  # hex digits of the digest that name a version's folder


DEFAULT_MAX_BUNDLE_BYTES = 8 * 1024**3
"""The largest bundle pulled when no limit is given (``imgcls pull --max-bundle-mb``): generous, but finite."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Version:
    """One immutable stored version of a model."""

    name: str
    seq: int
    digest: str
    created: str
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)
    files: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return self.digest[:ID_LEN]

    @property
    def key(self) -> str:
        return f"{self.name}/versions/{self.id}"

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def __str__(self) -> str:
        return f"{self.name}:{self.seq} ({self.id[:12]})"


@dataclass(frozen=True)
class Alias:
    """An alias and the version it points at; ``generation`` is the precondition for moving it."""

    name: str
    alias: str
    seq: int
    digest: str
    updated: str
    generation: int


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: Version
    previous: Alias | None

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.digest != self.version.digest


@dataclass(frozen=True)
class PushResult:
    version: Version
    created: bool  # False: an identical bundle was already stored (a no-op, but for ``restored``)
    aliases: list[AliasMove]
    restored: list[str] = field(default_factory=list)  # files of an existing version found missing and uploaded


class DamagedRecord(StoreError):
    """A record of the store (a version's ``version.json``, an alias) that cannot be read: modified by hand or
    corrupted at rest. Listings skip it with a warning; the hint names the repair."""


def _load_json(data: bytes, what: str, *, hint: str = "the store was modified by hand") -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedRecord(f"{what} is not valid JSON", hint=hint, exit_code=1) from exc
    except RecursionError:  # nested deeper than json's parser goes: damaged like any record that is not one
        raise DamagedRecord(f"{what} is nested too deeply to be a record", hint=hint, exit_code=1) from None
    if not isinstance(obj, dict):
        raise DamagedRecord(f"{what} is not a JSON object", hint=hint, exit_code=1)
    return obj


class Store:
    """A model store: open one with :meth:`Store.open` on a folder, ``file://`` or ``gs://`` URI.

    Example:
        store = Store.open("gs://my-bucket/models")
        result = store.push("runs/digits", aliases=["staging"])
        store.set_alias("digits", "production", str(result.version.seq))
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @classmethod
    def open(cls, uri: str | Path | StoreURI) -> Store:
        parsed = uri if isinstance(uri, StoreURI) else parse_store_uri(uri)
        if parsed.scheme == "gs":
            from imgcls.store.gcs import GCSBackend

            return cls(GCSBackend(parsed))
        from imgcls.store.local import LocalBackend

        backend = LocalBackend(parsed)
        backend.check()
        return cls(backend)

    @property
    def uri(self) -> StoreURI:
        return self.backend.uri

    # -- reading --------------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Names of the models in the store: the folders at its root that hold a model's ``versions`` or
        ``aliases`` (a folder that is no store lists none of its sub-folders)."""
        return [
            n
            for n in self.backend.list_children("")
            if NAME_RE.fullmatch(n) and {"versions", "aliases"} & set(self.backend.list_children(n))
        ]

    def _damaged_version_hint(self, name: str, vid: str) -> str:
        return (
            f"the store was modified by hand or is corrupt: remove the folder {name}/versions/{vid} from "
            f"{self.uri} and push that bundle again (it gets a new version number)"
        )

    def _record(self, name: str, vid: str) -> Version | None:
        got = self.backend.read(f"{name}/versions/{vid}/{VERSION_RECORD}")
        if got is None:
            return None
        hint = self._damaged_version_hint(name, vid)
        rec = _load_json(got[0], f"{name}/versions/{vid}/{VERSION_RECORD}", hint=hint)
        try:
            version = Version(
                name=name,
                seq=int(rec["seq"]),
                digest=str(rec["digest"]),
                created=str(rec.get("created", "")),
                metrics=dict(rec.get("metrics") or {}),
                files={str(k): int(v) for k, v in dict(rec.get("files") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedRecord(f"version record {name}/versions/{vid} is malformed", hint=hint, exit_code=1) from exc
        if version.id != vid:
            raise DamagedRecord(
                f"version record {name}/versions/{vid} names digest {version.digest[:12]}…, not its folder's",
                hint=hint,
                exit_code=1,
            )
        return version

    def versions(self, name: str) -> list[Version]:
        """Every committed version of ``name``, oldest first (an empty list if there is none)."""
        validate_name(name)
        found = []
        for vid in self.backend.list_children(f"{name}/versions"):
            if len(vid) != ID_LEN or any(c not in "0123456789abcdef" for c in vid):
                continue
            try:
                version = self._record(name, vid)
            except DamagedRecord as exc:  # one damaged record must not hide the others (nor block the repair)
                logger.warning("skipping a damaged version of %s: %s (%s)", name, exc.message, exc.hint)
                continue
            if version is not None:
                found.append(version)
        return sorted(found, key=lambda v: v.seq)

    def no_model_error(self, name: str) -> StoreError:
        self.backend.check()  # a missing bucket explains an empty listing better
        known = self.models()
        if name in known:  # its folder is there, with no committed version: a push was interrupted
            return StoreError(
                f"model {name!r} in store {self.uri} has no committed version yet (a push of it did not finish)",
                hint=f"push the bundle again to complete it: imgcls push BUNDLE --to {self.uri} --name {name}",
            )
        hint = f"models in this store: {', '.join(known)}" if known else "push one first: imgcls push BUNDLE --to URI"
        return StoreError(f"no model named {name!r} in store {self.uri}", hint=hint)

    def version(self, name: str, selector: str) -> Version:
        """The version ``selector`` of ``name``: a sequence number (``3``) or a digest prefix (``a1b2c3``)."""
        validate_name(name)
        validate_version(selector)
        if SEQ_RE.fullmatch(selector):
            got = self.backend.read(f"{name}/sequence/{selector}")
            if got is not None:
                digest = str(_load_json(got[0], f"{name}/sequence/{selector}").get("digest", ""))
                version = self._record(name, digest[:ID_LEN]) if len(digest) >= ID_LEN else None
                if version is not None and version.seq == int(selector):
                    return version
        # Only a selector of 6+ hex digits is a digest prefix: "7" is a sequence number, never the first digit of
        # some version's hash.
        matches = (
            [v for v in self.versions(name) if v.digest.startswith(selector)]
            if DIGEST_PREFIX_RE.fullmatch(selector)
            else []
        )
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"version prefix {selector!r} of {name} is ambiguous", hint="give more hex digits")
        if not self.backend.list_children(f"{name}/versions"):
            raise self.no_model_error(name)
        seqs = ", ".join(str(v.seq) for v in self.versions(name)) or "none"
        raise StoreError(f"{name} has no version {selector!r} in {self.uri}", hint=f"versions: {seqs}")

    def alias(self, name: str, alias: str) -> Alias | None:
        """The alias ``name@alias`` (None if it does not exist); DamagedRecord if its record cannot be read."""
        validate_name(name)
        validate_name(alias, "alias")
        got = self.backend.read(f"{name}/aliases/{alias}")
        if got is None:
            return None
        return self._parse_alias(name, alias, *got)

    def _parse_alias(self, name: str, alias: str, data: bytes, generation: int) -> Alias:
        hint = (
            f"the store was modified by hand or is corrupt: point the alias at a version again with "
            f"`imgcls models alias {self.uri} {name} VERSION {alias}`"
        )
        rec = _load_json(data, f"alias {name}@{alias} ({name}/aliases/{alias})", hint=hint)
        try:
            return Alias(
                name=name,
                alias=alias,
                seq=int(rec["version"]),
                digest=str(rec["digest"]),
                updated=str(rec.get("updated", "")),
                generation=generation,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedRecord(f"alias {name}@{alias} is malformed", hint=hint, exit_code=1) from exc

    def _alias_to_move(self, name: str, alias: str) -> tuple[Alias | None, int]:
        """The alias as a mover sees it: (the alias or None, the generation to write against; 0: none exists).

        A damaged alias record reads as no alias with its generation: moving the alias repairs it, still by
        compare-and-swap (a concurrent repair or move wins over this one)."""
        try:
            current = self.alias(name, alias)
        except DamagedRecord as exc:
            got = self.backend.read(f"{name}/aliases/{alias}")
            if got is None:  # removed meanwhile
                return None, 0
            try:
                fixed = self._parse_alias(name, alias, *got)  # repaired meanwhile
                return fixed, fixed.generation
            except DamagedRecord:
                logger.warning("replacing the damaged alias %s@%s: %s", name, alias, exc.message)
                return None, got[1]
        return current, current.generation if current is not None else 0

    def aliases(self, name: str) -> dict[str, Alias]:
        """The readable aliases of ``name``; a damaged one is skipped with a warning naming the repair."""
        out = {}
        for alias in self.backend.list_children(f"{name}/aliases"):
            if NAME_RE.fullmatch(alias):
                try:
                    found = self.alias(name, alias)
                except DamagedRecord as exc:
                    logger.warning("skipping a damaged alias: %s (%s)", exc.message, exc.hint)
                    continue
                if found is not None:
                    out[alias] = found
        return out

    def resolve(self, ref: ModelRef) -> Version:
        """The version a reference names (following its alias)."""
        if ref.version is not None:
            return self.version(ref.name, ref.version)
        alias = ref.alias or "latest"
        found = self.alias(ref.name, alias)
        if found is None:
            if not self.backend.list_children(f"{ref.name}/versions"):
                raise self.no_model_error(ref.name)
            known = ", ".join(sorted(self.aliases(ref.name))) or "none"
            number = re.fullmatch(r"v?([1-9][0-9]{0,8})", alias)
            if number:  # NAME@3 / NAME@v3 meant a version number: that is NAME:3
                hint = f"a version number is written with a colon: {ref.name}:{number.group(1)} (aliases: {known})"
            else:
                hint = f"aliases: {known}; set one with `imgcls models alias {self.uri} {ref.name} VERSION {alias}`"
            raise StoreError(f"{ref.name} has no alias {alias!r} in {self.uri}", hint=hint)
        version = self._record(ref.name, found.digest[:ID_LEN])
        if version is None or version.digest != found.digest:
            raise StoreError(
                f"alias {ref.name}@{alias} points at version {found.seq}, which is not in the store",
                hint="the store was modified by hand; move the alias to an existing version",
                exit_code=1,
            )
        return version

    def manifest(self, version: Version) -> tuple[bytes, BundleMeta]:
        """The stored ``bundle.json`` of a version (raw bytes and typed), checked against its digest."""
        got = self.backend.read(f"{version.key}/{MANIFEST}")
        if got is None:
            raise StoreError(f"{version} has no {MANIFEST} in the store", hint="the version is partial", exit_code=1)
        meta = _load_json(got[0], f"{version.key}/{MANIFEST}")
        if sha256_bytes(canonical_json(meta)) != version.digest:
            raise StoreError(
                f"stored version {version} is corrupt: its {MANIFEST} does not match the version's digest; refused",
                hint=_damaged_copy_hint(self, version),
                exit_code=1,
            )
        try:
            typed = parse_manifest(meta, where=f"stored version {version}")
        except BundleError as exc:
            raise StoreError(exc.message, hint=exc.hint) from None
        return got[0], typed

    # -- writing --------------------------------------------------------------------------------------------
    def push(
        self,
        bundle_dir: str | Path,
        *,
        name: str | None = None,
        aliases: Iterable[str] = (),
        progress: Progress | None = None,
        require: Iterable[Requirement] = (),
        force: bool = False,
    ) -> PushResult:
        """Verify a bundle, upload it as a new immutable version (or find the identical one), move aliases.

        ``latest`` moves automatically to a newly created version. Every object is created with a create-only
        precondition; an object left by an interrupted push must match the bundle byte for byte (crc32c).
        Other aliases pass the promotion gate (see :meth:`set_alias`) before anything is uploaded.
        """
        bundle = load_bundle(bundle_dir)
        if name is None:
            name = bundle.name
            if not NAME_RE.fullmatch(name):
                raise UsageError(
                    f"the bundle's name {name!r} is not a valid store name",
                    hint="pass --name with 1-64 characters from a-z 0-9 . _ - (starting with a letter or digit)",
                )
        validate_name(name)
        aliases = [_new_alias_name(a) for a in aliases]
        require = list(require)
        if not force:
            for a in aliases:
                if a != "latest":
                    check_promotion(
                        bundle.meta,
                        require,
                        what=f"bundle {bundle.path}",
                        alias=a,
                        bundle_hint=f"run `imgcls export {bundle.path}` and push again",
                    )
        digest = bundle.digest
        vid = digest[:ID_LEN]
        existing = self._record(name, vid)
        if existing is not None:
            if existing.digest != digest:
                raise StoreError(f"digest collision for {name} version {vid}", exit_code=1)
            restored = self._check_stored_copy(existing, bundle, progress)  # "already stored" must be true
            moves = [self.set_alias(name, a, existing, force=True) for a in aliases]  # gated above
            return PushResult(existing, created=False, aliases=moves, restored=restored)

        key = f"{name}/versions/{vid}"
        for rel in bundle.files:  # before anything is uploaded: a push that cannot finish does not start
            try:
                check_store_key(f"{key}/{rel}")
            except StoreError:
                raise BundleError(
                    f"bundle {bundle.path} has a file a store cannot hold: {rel!r} (store object names take no "
                    "'%', backslash or control character)",
                    hint="rename the file and list the new name in the manifest (or leave it out of the bundle), "
                    "then push again",
                ) from None
        manifest_sha = _manifest_sha256(bundle)
        sizes = {}
        for rel, sha in sorted(bundle.files.items()):
            src = bundle.path / rel
            sizes[rel] = src.stat().st_size
            self._create_file(f"{key}/{rel}", src, progress, sha256=sha, bundle=bundle)
        self._create_file(f"{key}/{MANIFEST}", bundle.path / MANIFEST, progress, sha256=manifest_sha, bundle=bundle)

        seq = self._claim_sequence(name, digest)
        record = {
            "name": name,
            "seq": seq,
            "digest": digest,
            "created": _now(),
            "metrics": bundle.metrics.to_dict(),
            "files": sizes,
            "bundle_name": bundle.name,
        }
        try:
            self.backend.write(f"{key}/{VERSION_RECORD}", _dumps(record), if_generation_match=0)
        except PreconditionFailed:  # the same bundle was pushed concurrently and committed first
            self.backend.delete(f"{name}/sequence/{seq}")
            winner = self._record(name, vid)
            if winner is None:
                raise StoreError(f"cannot commit {name} version {vid}", exit_code=1) from None
            return PushResult(
                winner, created=False, aliases=[self.set_alias(name, a, winner, force=True) for a in aliases]
            )
        version = self._record(name, vid)
        assert version is not None
        logger.info("pushed %s to %s", version, self.uri)
        moves = []
        latest = self._advance_latest(version)
        if latest is not None:
            moves.append(latest)
        moves += [self.set_alias(name, a, version, force=True) for a in aliases if a != "latest"]
        return PushResult(version, created=True, aliases=moves)

    def _check_stored_copy(self, version: Version, bundle: Bundle, progress: Progress | None) -> list[str]:
        """Compare every stored object of ``version`` with the bundle's file (size and checksum; the manifest by its
        digest), so that pushing a bundle again over a damaged copy never says "already stored".

        A missing object is uploaded again (create-only: the version gets back exactly what its manifest lists);
        one with other content is StoreError (exit 1): a version's objects are never overwritten. Returns the
        files restored.
        """
        self.manifest(version)  # raises when the stored manifest does not match the version's digest
        restored = []
        for rel in sorted(bundle.files):
            src = bundle.path / rel
            stat = self.backend.stat(f"{version.key}/{rel}")
            if stat is None:
                self._create_file(f"{version.key}/{rel}", src, progress, sha256=bundle.files[rel], bundle=bundle)
                restored.append(rel)
            elif stat.size != src.stat().st_size or stat.crc32c not in (0, self.backend.checksum(src)):
                raise StoreError(
                    f"{version} in {self.uri} holds this bundle, but its stored {rel} differs from the bundle's: the "
                    "stored copy is damaged; nothing was changed",
                    hint=_damaged_copy_hint(self, version),
                    exit_code=1,
                )
        if restored:
            logger.warning("%s: restored %s, missing from the store", version, ", ".join(restored))
        return restored

    def _create_file(self, key: str, src: Path, progress: Progress | None, *, sha256: str, bundle: Bundle) -> None:
        try:
            self.backend.upload_file(key, src, progress=progress, sha256=sha256)
        except ContentChanged:  # the bytes uploaded are not the ones verified: never commit them
            raise _changed_during_push(bundle, src) from None
        except PreconditionFailed:  # left by an interrupted or concurrent push of the same bundle
            stat = self.backend.stat(key)
            if stat is None or stat.size != src.stat().st_size or stat.crc32c not in (0, self.backend.checksum(src)):
                raise StoreError(
                    f"{key} already exists in {self.uri} with different content",
                    hint="the store was modified by hand; delete that version folder and push again",
                    exit_code=1,
                ) from None

    def _claim_sequence(self, name: str, digest: str) -> int:
        taken = [int(n) for n in self.backend.list_children(f"{name}/sequence") if SEQ_RE.fullmatch(n)]
        seq = max(taken, default=0) + 1
        for _ in range(1000):
            try:
                self.backend.write(f"{name}/sequence/{seq}", _dumps({"digest": digest}), if_generation_match=0)
                return seq
            except PreconditionFailed:
                seq += 1
        raise ConflictError(f"could not claim a sequence number for {name}", hint="push again")

    def _advance_latest(self, version: Version) -> AliasMove | None:
        """Move ``latest`` to ``version`` unless it already points at a newer one (retrying lost races)."""
        for _ in range(50):
            current, generation = self._alias_to_move(version.name, "latest")
            if current is not None and current.seq >= version.seq:
                return None
            try:
                return self._write_alias(version, "latest", current, generation)
            except PreconditionFailed:
                continue
        raise ConflictError(f"could not move {version.name}@latest: it keeps moving", hint="push again")

    def _write_alias(self, version: Version, alias: str, current: Alias | None, generation: int) -> AliasMove:
        """Write the alias by compare-and-swap against ``generation`` (0: it must not exist)."""
        record = {"version": version.seq, "digest": version.digest, "updated": _now()}
        if current is not None:
            record["previous"] = {"version": current.seq, "digest": current.digest}
        self.backend.write(f"{version.name}/aliases/{alias}", _dumps(record), if_generation_match=generation)
        return AliasMove(alias=alias, version=version, previous=current)

    def set_alias(
        self,
        name: str,
        alias: str,
        target: Version | str,
        *,
        require: Iterable[Requirement] = (),
        force: bool = False,
    ) -> AliasMove:
        """Point ``name@alias`` at a version by compare-and-swap (promote or roll back).

        Args:
            name: The model.
            alias: The alias to move or create.
            target: A Version, or a selector (sequence number or digest prefix).
            require: Metric requirements on the version's own metrics (``test_top1>=0.9``).
            force: Skip the promotion gate.

        The promotion gate first refuses (GateError, exit 1) a version that ``imgcls serve`` would refuse (no
        ONNX export, a failed export gate) or that misses a requirement. Then the alias is read, and written
        with that read's generation as precondition: if another writer moved it in between, ConflictError
        (exit 3) and nothing changes.
        """
        validate_name(name)
        _new_alias_name(alias)
        version = target if isinstance(target, Version) else self.version(name, target)
        if not force:
            _, meta = self.manifest(version)
            check_promotion(
                meta,
                require,
                what=f"{name} version {version.seq}",
                alias=alias,
                bundle_hint="export the bundle (`imgcls export DIR`), push it as a new version and promote that",
            )
        current, generation = self._alias_to_move(name, alias)
        if current is not None and current.digest == version.digest:
            return AliasMove(alias=alias, version=version, previous=current)
        try:
            return self._write_alias(version, alias, current, generation)
        except PreconditionFailed:
            now = self._alias_to_move(name, alias)[0]
            where = f"version {now.seq}" if now is not None else "nothing"
            raise ConflictError(
                f"alias {name}@{alias} was moved by someone else while this command ran (it now points at {where}); "
                f"it was not changed to version {version.seq}",
                hint=f"check `imgcls models list {self.uri} {name}` and run the command again if still wanted",
            ) from None

    # -- pulling --------------------------------------------------------------------------------------------
    def pull(
        self,
        version: Version,
        dest: str | Path,
        *,
        progress: Progress | None = None,
        provenance: bool = False,
        max_bytes: int | None = DEFAULT_MAX_BUNDLE_BYTES,
    ) -> Path:
        """Download a version into ``dest`` through a temporary folder: verified, then renamed into place.

        ``dest`` must not exist (or be an empty folder, or already hold this exact version: then nothing
        happens). A corrupt or partial download is refused and leaves nothing behind. With ``provenance``, a
        side file ``.imgcls-store.json`` (not part of the bundle) records the store, name and version.

        A bad manifest cannot fill the disk: the stored size of every file it lists is summed before anything
        is downloaded (over ``max_bytes``: refused), the bytes are counted while they stream (a download
        that grows past that limit stops at once), and each file is verified against its sha256 as soon as
        it has arrived (the first bad file stops the pull).
        """
        dest = Path(dest).absolute()
        if _holds_version(dest, version):
            return dest
        if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
            raise UsageError(
                f"refusing to pull into {dest}: it exists and is not an empty folder",
                hint="choose a new --to folder, or remove this one",
            )
        raw, meta = self.manifest(version)
        limit = max_bytes
        if limit is not None:
            total = 0
            for rel in meta.files:
                stat = self.backend.stat(f"{version.key}/{validate_rel_path(rel)}")
                if stat is None:
                    raise StoreError(
                        f"{version}: {rel} is missing from the store",
                        hint="the stored version is partial; push the same bundle again to complete it",
                    )
                total += stat.size
            if total > limit:
                raise UsageError(
                    f"{version} is {total / 2**20:,.1f} MB, more than the limit of {limit / 2**20:,.1f} MB; "
                    "nothing was downloaded",
                    hint="pass a larger --max-bundle-mb if this size is expected",
                )
        dest.parent.mkdir(parents=True, exist_ok=True)
        with staging_dir(dest, "pull") as tmp:

            def refused(exc: BundleError) -> StoreError:
                return StoreError(
                    f"stored version {version} failed verification and was refused: "
                    f"{exc.message.replace(str(tmp), 'the download')}",
                    hint=f"the stored copy is corrupt: {_damaged_copy_hint(self, version)}",
                    exit_code=1,
                )

            try:
                received = 0
                for rel in sorted(meta.files):
                    target = tmp / validate_rel_path(rel)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    before = received

                    def counted(key: str, done: int, size: int, before: int = before) -> None:
                        nonlocal received
                        received = before + done
                        if limit is not None and received > limit:
                            raise UsageError(
                                f"{version}: the download passed the limit of {limit / 2**20:,.1f} MB and was stopped",
                                hint="the stored objects grew since their sizes were read; pull again",
                            )
                        if progress:
                            progress(key, done, size)

                    self.backend.download_file(f"{version.key}/{rel}", target, progress=counted)
                    try:  # verified as soon as it has arrived: a bad file stops the pull before the next one
                        verify_files(tmp, {rel: meta.files[rel]})
                    except BundleError as exc:
                        raise refused(exc) from exc
                (tmp / MANIFEST).write_bytes(raw)
                try:  # every file was verified as it arrived
                    load_bundle(tmp, verify=False)
                except BundleError as exc:
                    raise refused(exc) from exc
                if provenance:
                    record = {
                        "store": str(self.uri),
                        "name": version.name,
                        "version": version.seq,
                        "digest": version.digest,
                        "created": version.created,
                        "pulled": _now(),
                    }
                    (tmp / PROVENANCE).write_bytes(_dumps(record))
                os.chmod(tmp, 0o755)
                fsync_tree(tmp)
                with contextlib.suppress(OSError):
                    dest.rmdir()  # an empty destination folder
                try:
                    os.rename(tmp, dest)
                except OSError:
                    if _holds_version(dest, version):  # a concurrent pull of the same version won
                        return dest
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("pulled %s into %s", version, dest)
        return dest


def _manifest_sha256(bundle: Bundle) -> str:
    """sha256 of the ``bundle.json`` file that describes ``bundle`` (the manifest it was loaded from)."""
    data = (bundle.path / MANIFEST).read_bytes()
    try:
        same = sha256_bytes(canonical_json(json.loads(data))) == bundle.digest
    except (json.JSONDecodeError, UnicodeDecodeError):
        same = False
    if not same:
        raise _changed_during_push(bundle, bundle.path / MANIFEST)
    return sha256_bytes(data)


def _changed_during_push(bundle: Bundle, src: Path) -> BundleError:
    return BundleError(
        f"bundle {bundle.path} changed while it was being pushed: {src.relative_to(bundle.path)} no longer has the "
        f"content {MANIFEST} was verified with; nothing was committed to the store",
        hint="wait until nothing writes into the bundle (a running `imgcls train` or `imgcls export`), then push again",
    )


def _damaged_copy_hint(store: Store, version: Version) -> str:
    return (
        f"remove the folder {version.key} from {store.uri} and push the bundle again: it is stored afresh (a new "
        "version number; the aliases on this version follow it, they name its digest); without the bundle, move "
        "the aliases to another version"
    )


def _new_alias_name(alias: str) -> str:
    """An alias name a move may create: a valid name that does not read as a version number (``3``, ``v3``):
    ``NAME@3`` beside ``NAME:3`` would name two versions alike, and W&B keeps ``v3`` for its own numbering."""
    validate_name(alias, "alias")
    if re.fullmatch(r"v?[0-9]+", alias):
        raise UsageError(
            f"alias {alias!r} reads as a version number",
            hint="a version is pinned as NAME:VERSION already; give the alias a name (production, staging, "
            f"release-{alias.lstrip('v')})",
        )
    return alias


def _holds_version(path: Path, version: Version) -> bool:
    """True if ``path`` is a complete, verified copy of ``version`` (every sha256 checked)."""
    try:
        bundle = load_bundle(path, verify=False)
    except BundleError:
        return False
    if bundle.digest != version.digest:
        return False
    try:
        verify_files(path, bundle.meta.files)
    except BundleError as exc:
        logger.warning("%s holds %s but fails verification: %s", path, version, exc.message)
        return False
    return True


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def provenance(path: str | Path) -> dict[str, Any] | None:
    """The store version a cached bundle directory was pulled from (None for a bundle made elsewhere).

    Example:
        provenance(resolve_model("gs://b/models/digits@production"))["version"]  # 3
    """
    try:
        record = json.loads((Path(path) / PROVENANCE).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("version"), int):
        return None
    try:
        digest = load_bundle(path, verify=False).digest
    except BundleError:
        return None
    if digest != record.get("digest"):
        return None  # the side file does not describe this bundle
    return record
