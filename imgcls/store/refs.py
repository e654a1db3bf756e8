"""Store URIs and model references: parsing and validation (nothing here touches a backend).

A *store URI* names the root of a store: a local folder (``/srv/models``, ``./store``, ``file:///srv/models``)
or a bucket prefix (``gs://bucket/prefix``). A *model reference* names one version in a store:

- ``URI/NAME@ALIAS`` (``gs://b/models/digits@production``),
- ``URI/NAME:VERSION`` where VERSION is a sequence number (``:3``) or a prefix of the content hash (``:a1b2c3``),
- ``NAME@ALIAS`` / ``NAME:VERSION`` alone: the default store.

Names, aliases and versions are validated here so that no key or local path can escape the store root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imgcls.errors import StoreError, UsageError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SEQ_RE = re.compile(r"[1-9][0-9]{0,8}")
DIGEST_PREFIX_RE = re.compile(r"[0-9a-f]{6,64}")


def default_store_uri(environ: dict[str, str] | None = None) -> str:
    """The store used when none is named: ``$IMGCLS_STORE``, else ``$IMGCLS_CACHE/store`` (:mod:`imgcls.paths`)."""
    from imgcls.paths import default_store

    return default_store(environ)


def validate_name(value: str, what: str = "model name") -> str:
    """Return ``value`` if it is a valid model or alias name, else raise UsageError naming the rule."""
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
        shown = repr(value) if isinstance(value, str) and len(value) <= 80 else repr(str(value)[:80]) + "…"
        raise UsageError(
            f"invalid {what} {shown}",
            hint="use 1-64 characters from a-z 0-9 . _ -, starting with a letter or digit (pattern "
            "[a-z0-9][a-z0-9._-]{0,63})",
        )
    return value


def validate_version(value: str) -> str:
    """A version selector: a sequence number (``3``) or a content-hash prefix of 6+ hex digits."""
    if isinstance(value, str) and (SEQ_RE.fullmatch(value) or DIGEST_PREFIX_RE.fullmatch(value)):
        return value
    raise UsageError(
        f"invalid version {value!r}",
        hint="use a sequence number like 3, or 6+ hex digits of the version's hash (see `imgcls models list`)",
    )


@dataclass(frozen=True)
class StoreURI:
    """A parsed store root: ``scheme`` is "file" or "gs"; ``location`` a local path or "bucket/prefix"."""

    scheme: str
    location: str

    @property
    def bucket(self) -> str:
        return self.location.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        parts = self.location.split("/", 1)
        return parts[1].strip("/") if len(parts) > 1 else ""

    @property
    def path(self) -> Path:
        return Path(self.location)

    def __str__(self) -> str:
        return f"gs://{self.location}" if self.scheme == "gs" else self.location


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def _refuse_url_extras(text: str) -> None:
    """UsageError for what a URL may carry and a store URI does not: a user name or password (``gs://u:p@b``),
    a query string or a fragment (``?token=…``). The message never repeats them: they may be secrets."""
    scheme = "gs://" if text.startswith("gs://") else "file://" if text.startswith("file://") else None
    if scheme is None:
        return  # a local path may hold any character
    rest = text[len(scheme) :]
    authority, slash, path = rest.partition("/")
    user = authority.rsplit("@", 1)[0] if "@" in authority else None
    if user is not None and (slash or ":" in user):  # not gs://NAME@ALIAS, a reference without a bucket
        shown = f"{scheme}***@{authority.rsplit('@', 1)[1]}" + (f"/{path}" if path else "")
        raise UsageError(
            f"{shown.split('?', 1)[0].split('#', 1)[0]}: a {scheme} URI takes no user name or password",
            hint="remove them from the URI; a gs:// store uses Application Default Credentials (`gcloud auth "
            "application-default login`, or GOOGLE_APPLICATION_CREDENTIALS)",
        )
    for mark, what in (("?", "query string"), ("#", "fragment")):
        if mark in text:
            raise UsageError(
                f"{text.split('?', 1)[0].split('#', 1)[0]}{mark}…: a store URI or model reference takes no {what}",
                hint=f"remove everything from the '{mark}' on; write URI/NAME@ALIAS or URI/NAME:VERSION",
            )


def parse_store_uri(uri: str | Path) -> StoreURI:
    """Parse a store root URI (local path, ``file://`` or ``gs://bucket[/prefix]``).

    Example:
        parse_store_uri("gs://my-bucket/models").bucket  # "my-bucket"
    """
    text = str(uri)
    if "\x00" in text:
        raise UsageError("store URI contains a NUL byte", hint="pass a plain path or gs://bucket/prefix")
    _refuse_url_extras(text)
    if text.startswith("gs://"):
        location = text[len("gs://") :].strip("/")
        bucket = location.split("/", 1)[0]
        if not _BUCKET_RE.fullmatch(bucket):
            raise UsageError(
                f"invalid bucket name {bucket!r} in {text!r}", hint="use gs://BUCKET/PREFIX with a real bucket name"
            )
        prefix = location[len(bucket) :].strip("/")
        for part in prefix.split("/") if prefix else []:
            if part in ("", ".", "..") or "\\" in part or "%" in part:
                raise UsageError(f"invalid prefix {prefix!r} in {text!r}", hint="use plain path segments")
        return StoreURI("gs", f"{bucket}/{prefix}" if prefix else bucket)
    if text.startswith("file://"):
        text = text[len("file://") :]
        if not text.startswith("/"):
            raise UsageError(
                f"file:// URIs must be absolute, got {str(uri)!r}", hint="write file:///abs/path (three slashes)"
            )
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise UsageError(
            f"unsupported store URI {text!r}", hint="use a local folder, file:///path or gs://bucket/prefix"
        )
    return StoreURI("file", str(Path(text).expanduser().absolute()))


@dataclass(frozen=True)
class ModelRef:
    """A model in a store, optionally with a version selector (``alias`` or ``version``, not both)."""

    store: StoreURI
    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def selector(self) -> str:
        if self.version is not None:
            return f":{self.version}"
        return f"@{self.alias or 'latest'}"

    def __str__(self) -> str:
        return f"{str(self.store).rstrip('/')}/{self.name}{self.selector}"


def split_selector(text: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` / ``NAME:VERSION`` / ``NAME`` -> (name, alias, version), all validated."""
    alias = version = None
    if "@" in text:
        text, alias = text.rsplit("@", 1)
        validate_name(alias, "alias")
    elif ":" in text:
        text, version = text.rsplit(":", 1)
        validate_version(version)
    validate_name(text)
    return text, alias, version


def looks_like_ref(ref: str | Path) -> bool:
    """True if ``ref`` is written as a store reference rather than a bundle directory."""
    text = str(ref)
    if text.startswith(("gs://", "file://")):
        return True
    last = text.rstrip("/").rsplit("/", 1)[-1]
    return "@" in last or (":" in last and not re.match(r"^[A-Za-z]:", text))


def parse_ref(ref: str | Path, *, default_store: str | None = None, require_selector: bool = False) -> ModelRef:
    """Parse ``URI/NAME[@ALIAS|:VERSION]`` or ``NAME[@ALIAS|:VERSION]`` (then in ``default_store``).

    A reference without a selector means ``@latest``.

    Example:
        parse_ref("gs://bucket/models/digits@production")
    """
    text = str(ref)
    if "\x00" in text:
        raise UsageError("model reference contains a NUL byte", hint="write URI/NAME@ALIAS or URI/NAME:VERSION")
    _refuse_url_extras(text)
    stripped = text.rstrip("/")
    if stripped.endswith(("gs:", "file:")) or stripped in ("", "gs:/", "file:/"):
        raise UsageError(f"model reference {text!r} names no model", hint="write URI/NAME@ALIAS or URI/NAME:VERSION")
    if "/" in stripped:
        root, last = stripped.rsplit("/", 1)
        if root in ("gs:/", "file:/", "file:"):
            raise UsageError(
                f"model reference {text!r} names a bucket but no model", hint="write gs://BUCKET/NAME@ALIAS"
            )
        store = parse_store_uri(root + "/" if root.endswith(":/") else root)
    else:
        last = stripped
        store = parse_store_uri(default_store or default_store_uri())
    if "\\" in last:
        raise UsageError(f"invalid model reference {text!r}: backslashes are not allowed")
    name, alias, version = split_selector(last)
    if require_selector and alias is None and version is None:
        raise UsageError(f"model reference {text!r} has no @ALIAS or :VERSION", hint=f"write {text}@latest or {text}:1")
    if alias is None and version is None:
        alias = "latest"
    return ModelRef(store=store, name=name, alias=alias, version=version)


def check_store_key(key: str) -> str:
    """Defence in depth for a key relative to a store root: relative, no '..', no backslash, no '%', no control
    character (NUL, a newline: GCS refuses CR and LF in object names)."""
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "%" in key
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key)
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise StoreError(f"refusing unsafe store key {key!r}", hint="names and paths must stay inside the store root")
    return key
