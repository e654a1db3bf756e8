"""ONNX file checks without the onnx package (a serving machine has only onnxruntime, or only OpenVINO).

The bundle's ONNX files are the one deployable format: every engine reads the same bytes, verified against
the bundle's manifest first (the bytes hashed are the bytes run).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from imgcls.bundle import Bundle, sha256_bytes
from imgcls.errors import BundleError

# precision -> the ONNX file `imgcls export` writes into the bundle; bf16 is fp32's file run in bf16 by the engine
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
SOURCE_PRECISION = {"fp32": "fp32", "bf16": "fp32", "int8": "int8", "fp16": "fp16"}


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values as memoryviews."""
    pos = 0
    value: Any
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


# message -> {field number: child message kind} for the fields that can hold tensors
_TENSOR_PATHS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def external_data_tensors(model_bytes: bytes) -> int:
    """How many tensors of a serialised ONNX model keep their data outside the file (0 for a self-contained one).

    Raises:
        ValueError: the bytes are not a well-formed protobuf message.
    """
    count = 0
    stack: list[tuple[str, memoryview]] = [("model", memoryview(model_bytes))]
    while stack:
        kind, buf = stack.pop()
        if kind == "tensor":
            for number, wire, value in _fields(buf):
                if (number == 14 and wire == 0 and value == 1) or (number == 13 and wire == 2):
                    count += 1
                    break
            continue
        children = _TENSOR_PATHS[kind]
        for number, wire, value in _fields(buf):
            if wire == 2 and number in children:
                stack.append((children[number], value))
    return count


def model_metadata(model_bytes: bytes) -> dict[str, str]:
    """The ONNX model's ``metadata_props`` (key -> value), e.g. the ``classes`` ``imgcls export`` embeds.

    Raises:
        ValueError: the bytes are not a well-formed protobuf message.
    """
    props: dict[str, str] = {}
    for number, wire, value in _fields(memoryview(model_bytes)):
        if number == 14 and wire == 2:  # ModelProto.metadata_props: StringStringEntryProto {1: key, 2: value}
            entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if w == 2}
            props[entry.get(1, "")] = entry.get(2, "")
    return props


def model_file_for(bundle: Bundle, precision: str) -> str:
    """The bundle-relative ONNX file for ``precision``; BundleError with the export command when absent."""
    source = SOURCE_PRECISION.get(precision, precision)
    export = bundle.meta.export
    entry = export.models.get(source) if export is not None else None
    rel = entry.file if entry is not None else MODEL_FILES[source]
    if not bundle.has(rel):
        flag = {"fp32": "", "int8": " --int8", "fp16": " --fp16"}[source]
        raise BundleError(
            f"bundle {bundle.path} has no {source} ONNX model ({rel})",
            hint=f"run `imgcls export {bundle.path}{flag}` first",
        )
    return rel


def read_verified(bundle: Bundle, rel: str) -> bytes:
    """The file's bytes, checked against the manifest: the bytes hashed are the bytes run."""
    data = bundle.file(rel).read_bytes()
    if sha256_bytes(data) != bundle.files[rel]:
        raise BundleError(
            f"bundle {bundle.path} failed verification: {rel} changed since it was exported",
            hint="the file was modified or corrupted; export, pull or train the bundle again",
        )
    return data


def load_model_bytes(bundle: Bundle, precision: str) -> tuple[str, bytes]:
    """``(relative file, verified self-contained ONNX bytes)`` of the bundle's model for ``precision``.

    Raises:
        BundleError: no such export, a tampered file, not ONNX, or tensors kept as external data.
    """
    rel = model_file_for(bundle, precision)
    data = read_verified(bundle, rel)
    try:
        n_external = external_data_tensors(data)
    except ValueError as exc:
        raise BundleError(f"{bundle.path / rel} is not a valid ONNX file ({exc})") from None
    if n_external:
        raise BundleError(
            f"{bundle.path / rel} keeps {n_external} tensor(s) as external data; "
            "imgcls only runs self-contained ONNX files",
            hint=f"re-export it with `imgcls export {bundle.path}`",
        )
    return rel, data
