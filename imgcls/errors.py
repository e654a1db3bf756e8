"""One error type for everything a user can get wrong, each with a hint that names the fix.

The CLI prints ``message`` and ``hint`` and exits with ``exit_code``; the server maps ``code`` to an HTTP
status. Exit codes: 1 = the operation ran and failed (a gate, a corrupt input), 2 = usage or environment
(bad flag, missing file, missing extra, no CUDA), 3 = conflict (a concurrent alias move).
"""

from __future__ import annotations


class ImgclsError(Exception):
    """Base error: a message that names the offending value and a hint that names the fix."""

    exit_code: int = 1
    code: str = "error"
    exit_at_once: bool = False
    """The CLI ends the process right after the message (``os._exit``), without Python's teardown: for a process
    whose native threads are stuck (a collective waiting on a hung peer), whose teardown aborts."""

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class UsageError(ImgclsError):
    """A bad flag, value or argument."""

    exit_code = 2
    code = "usage"


class ConfigError(UsageError):
    """A bad configuration key or value."""

    code = "config"


class MissingExtraError(UsageError):
    """A command needs an optional dependency that is not installed."""

    code = "missing_extra"


class DeviceError(UsageError):
    """The requested device (CUDA) is not available."""

    code = "device"


class MissingCapabilityError(UsageError):
    """``imgcls doctor --require X``: this machine lacks a capability (CUDA, GCS credentials, …)."""

    code = "missing_capability"


class DataError(UsageError):
    """A dataset that cannot be found or used."""

    code = "data"


class BundleError(ImgclsError):
    """A model bundle that is missing, partial, tampered or of an unknown format."""

    exit_code = 2
    code = "bundle"


class GateError(ImgclsError):
    """A quality gate failed (export parity, int8 accuracy drop)."""

    exit_code = 1
    code = "gate"


class DivergedError(ImgclsError):
    """Training diverged (a non-finite loss): the run's hyper-parameters, not the data, are at fault."""

    code = "diverged"


class ConflictError(ImgclsError):
    """A concurrent change won (an alias moved under us)."""

    exit_code = 3
    code = "conflict"


class StoreError(ImgclsError):
    """A model store problem (unknown name/version, unreachable bucket, bad reference)."""

    exit_code = 2
    code = "store"


class ImageError(ImgclsError):
    """An image that cannot be used. ``code`` says why; the server maps it to an HTTP status."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *, code: str = "corrupt_image") -> None:
        super().__init__(message, hint)
        self.code = code


# ImageError codes and the HTTP status each one maps to.
IMAGE_ERROR_STATUS = {
    "not_found": 404,
    "unsupported_format": 415,
    "corrupt_image": 400,
    "too_many_pixels": 413,
    "too_large": 413,
}
