"""The HTTP API of `imgcls serve` through FastAPI's TestClient, on a real trained and exported digits model."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr

from imgcls.bundle import edit_bundle
from imgcls.data.decode import decode_image
from imgcls.data.stats import image_stats
from imgcls.serve.app import create_app
from imgcls.serve.model import ServedModel, load_served
from imgcls.serve.predlog import read_predictions
from imgcls.serve.settings import ServeSettings

TOKEN = "t0ken-for-tests"


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.squeeze()).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits(exported_digits_bundle: Path) -> tuple[list[bytes], list[int]]:
    """Ten real validation digits as PNG files, with their labels."""
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        images, labels = d["images"][:10], d["labels"][:10]
    return [png(a) for a in images], [int(v) for v in labels]


def settings(bundle: Path, tmp_path: Path, **kw: Any) -> ServeSettings:
    base: dict[str, Any] = {
        "model": str(bundle),
        "log_predictions": tmp_path / "predictions.sqlite",
        "admin_token": SecretStr(TOKEN),
        "allow_models": (str(tmp_path), str(bundle.parent)),  # the tests reload copies made in tmp_path
    }
    return ServeSettings(**{**base, **kw})


@pytest.fixture
def client(exported_digits_bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(exported_digits_bundle, tmp_path))) as c:
        yield c


def predict(client: TestClient, data: bytes, **params: Any):
    return client.post("/v1/predict", params=params, files={"file": ("digit.png", data, "image/png")})


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


def test_predict_answers_the_right_digit_with_top_k_model_and_request_id(client: TestClient, digits) -> None:
    images, labels = digits
    answers = [predict(client, img, top_k=3) for img in images]
    assert all(r.status_code == 200 for r in answers)
    correct = sum(r.json()["class_id"] == y for r, y in zip(answers, labels, strict=True))
    assert correct >= 9  # the model scores ~99 % on these digits
    body = answers[0].json()
    assert set(body) == {"label", "class_id", "confidence", "top_k", "model", "request_id", "latency_ms"}
    assert len(body["top_k"]) == 3
    probs = [t["probability"] for t in body["top_k"]]
    assert probs == sorted(probs, reverse=True) and body["confidence"] == probs[0]
    assert body["top_k"][0]["label"] == body["label"] == str(body["class_id"])
    assert set(body["model"]) == {"name", "version", "sha256"} and body["model"]["name"] == "digits-resnet8"
    assert answers[0].headers["x-request-id"] == body["request_id"]
    assert len(predict(client, images[0]).json()["top_k"]) == 5  # default top_k
    assert len(predict(client, images[0], top_k=50).json()["top_k"]) == 10  # capped at the class count


def test_a_client_request_id_is_kept_and_a_bad_one_replaced(client: TestClient, digits) -> None:
    files = {"file": ("d.png", digits[0][0], "image/png")}
    r = client.post("/v1/predict", files=files, headers={"X-Request-ID": "trace-123"})
    assert r.json()["request_id"] == r.headers["x-request-id"] == "trace-123"
    r = client.post("/v1/predict", files=files, headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.json()["request_id"] != "bad id\twith spaces" and len(r.json()["request_id"]) == 32


def test_batch_answers_in_order_with_per_file_errors(client: TestClient, digits) -> None:
    images = digits[0]
    files = [("files", ("a.png", images[0], "image/png")), ("files", ("notes.txt", b"hello", "text/plain"))]
    files.append(("files", ("b.png", images[1], "image/png")))
    r = client.post("/v1/predict/batch", files=files, params={"top_k": 2})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["a.png", "notes.txt", "b.png"]
    assert [x["status"] for x in results] == [200, 415, 200]
    assert results[1]["error"]["code"] == "unsupported_format"
    assert len(results[2]["top_k"]) == 2
    assert r.json()["model"]["name"] == "digits-resnet8"


def test_model_endpoint_reports_metadata_and_the_real_provider(client: TestClient) -> None:
    public = client.get("/v1/model").json()
    assert public["classes"] == [str(i) for i in range(10)]
    assert public["input"]["size"] == [16, 16] and public["input"]["channels"] == 1
    assert public["provider"] == "CPUExecutionProvider"  # onnxruntime-gpu on a CPU machine: the truth, not "CUDA"
    # without the admin token: nothing about the server (its paths, the git commit, the training config)
    assert set(public) == {
        "name", "version", "sha256", "classes", "input", "engine", "precision", "provider", "limits", "uncertain_below"
    }  # fmt: skip
    assert client.get("/v1/model", headers={"Authorization": "Bearer wrong"}).json() == public
    # what a client must stay within, and the page's uncertainty threshold (the settings')
    assert public["limits"] == {"max_upload_bytes": 10 * 1024 * 1024, "max_files": 64, "max_pixels": 40_000_000}
    assert public["uncertain_below"] == 0.9
    info = client.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert info["classes"] == public["classes"] and info["ref"]
    assert info["metrics"]["test_top1"] > 0.9
    assert info["export"]["models"]["fp32"]["parity"]["batch_1"]["top1_agreement"] == 1.0
    assert info["lineage"]["dataset"]["name"] == "digits"
    assert info["precision"] == "fp32"


def test_int8_serving_uses_the_quantized_model(exported_digits_bundle: Path, tmp_path: Path, digits) -> None:
    with TestClient(create_app(settings(exported_digits_bundle, tmp_path, int8=True))) as client:
        info = client.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert (info["precision"], info["model_file"]) == ("int8", "model.int8.onnx")
        images, labels = digits
        correct = sum(predict(client, img).json()["class_id"] == y for img, y in zip(images, labels, strict=True))
        assert correct >= 9


def test_health_metrics_page_and_openapi(client: TestClient, digits) -> None:
    assert client.get("/livez").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"]["name"] == "digits-resnet8"
    predict(client, digits[0][0])
    predict(client, b"not an image")
    text = client.get("/metrics").text
    for name in (
        'imgcls_requests_total{endpoint="predict",status="200"}',
        'imgcls_requests_total{endpoint="predict",status="415"}',
        "imgcls_request_duration_seconds_bucket",
        "imgcls_inference_batch_size_bucket",
        "imgcls_queue_depth",
        "imgcls_predictions_total{label=",
        "imgcls_upload_bytes_bucket",
        'imgcls_model_info{name="digits-resnet8"',
    ):
        assert name in text, name
    assert 'provider="CPUExecutionProvider"' in text
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "v1/predict/batch" in page.text and "<script" in page.text and "http" not in page.text.split("<script")[1]
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/predict", "/v1/predict/batch", "/v1/model", "/livez", "/readyz", "/metrics", "/v1/admin/reload"):
        assert p in paths
    body = paths["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in body["schema"]["properties"]
    # /docs loaded whatever swagger-ui-dist@5 the CDN served that day onto the server's origin: one release now,
    # each script and style checked by the browser against its hash (Subresource Integrity)
    import re

    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    loads = re.findall(r"<(?:script|link)[^>]*(?:src|href)=\"https?://[^>]*>", docs.text)
    assert len(loads) == 2 and all("@5.36.0/" in t and 'integrity="sha384-' in t for t in loads), loads
    assert client.get("/redoc").status_code == 404  # its script was unpinned too


def truncated_png() -> bytes:
    data = png(np.full((64, 64), 200, dtype=np.uint8))
    return data[: len(data) // 2]


def bomb_png(side: int = 9000) -> bytes:
    """A valid 1-bit PNG of side × side pixels: tiny on disk, 81 M pixels decoded."""
    raw = b"".join(b"\x00" + b"\x00" * ((side + 7) // 8) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "corrupt_image"),
        (truncated_png(), 400, "corrupt_image"),
        (b"GIF89a" + b"\x00" * 64, 415, "unsupported_format"),
        (b"%PDF-1.4 pretending to be a png", 415, "unsupported_format"),
        (bomb_png(), 413, "too_many_pixels"),
    ],
)
def test_bad_images_get_their_status_and_never_a_500(client: TestClient, data: bytes, status: int, code: str) -> None:
    r = predict(client, data)
    assert (r.status_code, error_code(r)) == (status, code)


def test_request_shape_errors(client: TestClient, digits) -> None:
    img = digits[0][0]
    r = client.post("/v1/predict", files={"image": ("d.png", img, "image/png")})
    assert (r.status_code, error_code(r)) == (422, "missing_field")
    assert "'file'" in r.json()["error"]["message"]
    r = client.post("/v1/predict", content=img, headers={"content-type": "image/png"})
    assert (r.status_code, error_code(r)) == (415, "unsupported_media_type")
    r = predict(client, img, top_k=0)
    assert (r.status_code, error_code(r)) == (422, "invalid_parameter")
    r = predict(client, img, top_k="many")
    assert (r.status_code, error_code(r)) == (422, "invalid_parameter")
    r = client.post("/v1/predict/batch", files={"file": ("d.png", img, "image/png")})
    assert (r.status_code, error_code(r)) == (422, "missing_field")
    body = b"--xyz\r\nContent-Disposition: form-data; name=file\r\n\r\nabc"  # never closed
    r = client.post("/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert (r.status_code, error_code(r)) == (400, "malformed_multipart")
    r = client.get("/v1/nope")
    assert (r.status_code, error_code(r)) == (404, "not_found")
    r = client.get("/v1/predict")
    assert (r.status_code, error_code(r)) == (405, "method_not_allowed")
    assert r.json()["error"]["message"] == "GET is not allowed on /v1/predict"  # was "Method Not Allowed"
    assert r.json()["error"]["hint"].startswith("it takes POST, e.g. curl -F file=@")
    r = client.delete("/livez")
    assert r.json()["error"] == {
        "code": "method_not_allowed", "message": "DELETE is not allowed on /livez", "hint": "it takes GET, HEAD"
    }  # fmt: skip
    assert r.headers["allow"] == "GET, HEAD"  # HEAD is answered as GET: the 405 said GET only


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("top_k=3&top_k=abc", 422, "given 2 times"),  # the last one won: a proxy checking the first let 'abc' by
        ("top_k=abc&top_k=2", 422, "given 2 times"),
        ("top_k=1_0", 422, "positive integer"),  # int() read it as 10
        ("top_k=%D9%A3", 422, "positive integer"),  # an Arabic-Indic 3: int() read it as 3
        ("top%5Fk=1", 200, None),  # the same name, percent-encoded: was ignored (5 answers)
    ],
    ids=["twice", "twice-last-valid", "underscore", "non-ascii-digit", "encoded-name"],
)
def test_top_k_is_read_one_way(client: TestClient, digits, query: str, status: int, says: str | None) -> None:
    files = {"file": ("digit.png", digits[0][0], "image/png")}
    r = client.post(f"/v1/predict?{query}", files=files)
    assert r.status_code == status, r.text
    if says is None:
        assert len(r.json()["top_k"]) == 1
    else:
        assert error_code(r) == "invalid_parameter" and says in r.json()["error"]["message"]
        assert "?top_k=3" in r.json()["error"]["hint"]
    batch = client.post(f"/v1/predict/batch?{query}", files={"files": files["file"]})
    assert batch.status_code == status, batch.text


def test_upload_size_is_enforced_while_streaming(exported_digits_bundle: Path, tmp_path: Path, digits) -> None:
    app = create_app(settings(exported_digits_bundle, tmp_path, max_upload_mb=0.01))  # 10,485 bytes
    big = digits[0][0] + b"\x00" * 20_000
    with TestClient(app) as client:
        r = predict(client, big)  # announced by Content-Length: refused before reading
        assert (r.status_code, error_code(r)) == (413, "too_large")
        # No Content-Length (chunked): the app must stop reading once the count passes the limit. TestClient
        # reads a streamed body whole before the app sees it, so the app is driven through ASGI here and
        # counts how much of the body it asked for.
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        chunks = [head, *[b"\x00" * 4096] * 50, b"\r\n--b--\r\n"]
        sent: list[int] = []
        answer: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if len(sent) == len(chunks):
                return {"type": "http.disconnect"}
            sent.append(len(chunks[len(sent)]))
            return {"type": "http.request", "body": chunks[len(sent) - 1], "more_body": len(sent) < len(chunks)}

        async def send(message: dict[str, Any]) -> None:
            answer.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), (b"content-type", b"multipart/form-data; boundary=b"),
                        (b"transfer-encoding", b"chunked")],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
        }  # fmt: skip

        async def call() -> None:
            await app(scope, receive, send)

        assert client.portal is not None
        client.portal.call(call)
        assert answer[0]["type"] == "http.response.start" and answer[0]["status"] == 413
        assert json.loads(b"".join(m.get("body", b"") for m in answer[1:]))["error"]["code"] == "too_large"
        # it stopped reading at the first chunk that took the count past the limit (10,485 bytes), not at the end
        assert sum(sent) - sent[-1] <= 10_485 < sum(sent) < sum(map(len, chunks)), sent
        assert predict(client, digits[0][0]).status_code == 200  # and the server is fine
        files = [("files", (f"{i}.png", digits[0][0], "image/png")) for i in range(3)]
    app = create_app(settings(exported_digits_bundle, tmp_path, max_files=2))
    with TestClient(app) as client:
        r = client.post("/v1/predict/batch", files=files)
        assert (r.status_code, error_code(r)) == (413, "too_many_files")


def slow_loader(bundle_settings: ServeSettings, delay_s: float):
    """load_served, with inference slowed down (the real model underneath): for queue and timeout tests."""

    def load(ref: str) -> ServedModel:
        served = load_served(ref, bundle_settings)
        real = served.batcher.infer

        def slow(batch: np.ndarray) -> np.ndarray:
            time.sleep(delay_s)
            return real(batch)

        served.batcher.infer = slow
        return served

    return load


def test_queue_full_is_503_with_retry_after(exported_digits_bundle: Path, tmp_path: Path, digits) -> None:
    s = settings(exported_digits_bundle, tmp_path, max_queue=2)
    with TestClient(create_app(s)) as client:
        files = [("files", (f"{i}.png", digits[0][0], "image/png")) for i in range(3)]
        r = client.post("/v1/predict/batch", files=files)  # 3 images > 2 admitted: refused at once
        assert (r.status_code, error_code(r)) == (503, "queue_full")
        assert r.headers["retry-after"] == "1"
        assert client.post("/v1/predict/batch", files=files[:2]).status_code == 200


def test_inference_timeout_is_504(exported_digits_bundle: Path, tmp_path: Path, digits) -> None:
    s = settings(exported_digits_bundle, tmp_path, timeout_s=0.2)
    with TestClient(create_app(s, loader=slow_loader(s, 0.6))) as client:
        r = predict(client, digits[0][0])
        assert (r.status_code, error_code(r)) == (504, "inference_timeout")
        assert client.get("/livez").status_code == 200


def test_prediction_log_rows_match_the_answers(exported_digits_bundle: Path, tmp_path: Path, digits) -> None:
    s = settings(exported_digits_bundle, tmp_path)
    with TestClient(create_app(s)) as client:
        answers = [predict(client, img, top_k=2).json() for img in digits[0][:4]]
        predict(client, b"garbage")  # errors are not predictions
    rows = read_predictions(tmp_path / "predictions.sqlite")  # the lifespan's shutdown flushed the log
    assert [r["request_id"] for r in rows] == [a["request_id"] for a in answers]
    for row, answer, data in zip(rows, answers, digits[0], strict=False):
        assert (row["class_id"], row["label"], row["confidence"]) == (
            answer["class_id"],
            answer["label"],
            pytest.approx(answer["confidence"]),
        )
        assert row["top_k"] == answer["top_k"]
        assert (row["model_name"], row["model_version"], row["model_sha256"]) == tuple(answer["model"].values())
        assert (row["width"], row["height"], row["format"], row["bytes"]) == (16, 16, "PNG", len(data))
        expected = image_stats(decode_image(data)).as_dict()
        assert {k: row[k] for k in expected} == pytest.approx(expected)
        assert row["latency_ms"] == pytest.approx(answer["latency_ms"])
    assert sqlite3.connect(tmp_path / "predictions.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def renamed_copy(bundle: Path, dest: Path, name: str) -> Path:
    shutil.copytree(bundle, dest)
    with edit_bundle(dest) as edit:
        edit.meta.name = name
    return dest


def tampered_copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    onnx = dest / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-10] ^= 0xFF
    onnx.unlink()
    onnx.write_bytes(bytes(data))
    return dest


def test_admin_auth_on_every_method(exported_digits_bundle: Path, tmp_path: Path) -> None:
    with TestClient(create_app(settings(exported_digits_bundle, tmp_path))) as client:
        for method in ("POST", "GET", "DELETE"):
            r = client.request(method, "/v1/admin/reload")
            assert (r.status_code, error_code(r)) == (401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = client.request(method, "/v1/admin/reload", headers={"Authorization": "Bearer wrong"})
            assert (r.status_code, error_code(r)) == (403, "forbidden")
        r = client.get("/v1/admin/anything", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert r.status_code == 403
    with TestClient(create_app(settings(exported_digits_bundle, tmp_path, admin_token=None))) as client:
        r = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (r.status_code, error_code(r)) == (403, "admin_disabled")
        assert "IMGCLS_ADMIN_TOKEN" in r.json()["error"]["hint"]


def test_reload_switches_models_and_a_bad_one_keeps_the_old(
    client: TestClient, exported_digits_bundle: Path, tmp_path: Path, digits
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    other = renamed_copy(exported_digits_bundle, tmp_path / "other", "digits-other")
    r = client.post("/v1/admin/reload", headers=auth, json={"model": str(other)})
    assert r.status_code == 200, r.text
    assert r.json()["previous"]["name"] == "digits-resnet8" and r.json()["model"]["name"] == "digits-other"
    assert predict(client, digits[0][0]).json()["model"]["name"] == "digits-other"
    assert client.get("/v1/model", headers=auth).json()["ref"] == str(other)
    r = client.post("/v1/admin/reload", headers=auth)  # no body: reload the current reference
    assert r.status_code == 200 and r.json()["model"]["name"] == "digits-other"
    bad = tampered_copy(exported_digits_bundle, tmp_path / "bad")
    for body, code in (
        ({"model": str(bad)}, "reload_failed"),
        ({"model": str(tmp_path / "missing")}, "reload_failed"),
        ({"model": "http://169.254.169.254/latest/meta-data"}, "reload_failed"),
        ({"model": 42}, "invalid_request"),
    ):
        r = client.post("/v1/admin/reload", headers=auth, json=body)
        assert (r.status_code, error_code(r)) == (422, code), body
        assert predict(client, digits[0][0]).json()["model"]["name"] == "digits-other"  # still serving
    assert "failed verification" in client.post("/v1/admin/reload", headers=auth, json={"model": str(bad)}).text
    assert (
        "does not fetch URLs"
        in client.post("/v1/admin/reload", headers=auth, json={"model": "https://example.com/m"}).json()["error"][
            "message"
        ]
    )
    r = client.post("/v1/admin/reload", headers={**auth, "content-type": "application/json"}, content=b"{nope")
    assert (r.status_code, error_code(r)) == (400, "invalid_json")
    text = client.get("/metrics").text
    assert 'imgcls_model_reloads_total{result="ok"} 2.0' in text
    assert 'imgcls_model_info{name="digits-other"' in text and 'imgcls_model_info{name="digits-resnet8"' not in text


def test_serving_never_imports_torch(exported_digits_bundle: Path, tmp_path: Path, digits) -> None:
    script = f"""
import sys
from fastapi.testclient import TestClient
from imgcls.serve.app import create_app
from imgcls.serve.settings import ServeSettings
import imgcls.cli.serve
app = create_app(ServeSettings(model={str(exported_digits_bundle)!r}, log_predictions={str(tmp_path / "l.sqlite")!r}))
with TestClient(app) as c:
    r = c.post("/v1/predict", files={{"file": ("d.png", {digits[0][0]!r}, "image/png")}})
    assert r.status_code == 200, r.text
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm", "onnx"))
print(heavy)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def documented(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    """The JSON schema /openapi.json gives for this answer, resolvable on its own (its $refs point into it)."""
    content = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    return {**content["schema"], "components": spec["components"]}


def test_real_answers_validate_against_the_generated_openapi_schema(client: TestClient, digits, tmp_path) -> None:
    import jsonschema

    spec = client.get("/openapi.json").json()

    def check(response, method: str, path: str) -> dict[str, Any]:
        body = response.json()
        jsonschema.validate(body, documented(spec, method, path, response.status_code))
        return body

    auth = {"Authorization": f"Bearer {TOKEN}"}
    check(predict(client, digits[0][0], top_k=3), "post", "/v1/predict")
    files = [("files", ("a.png", digits[0][0], "image/png")), ("files", ("b.png", b"junk", "image/png"))]
    batch = check(client.post("/v1/predict/batch", files=files), "post", "/v1/predict/batch")
    assert [r["status"] for r in batch["results"]] == [200, 415]
    public = check(client.get("/v1/model"), "get", "/v1/model")
    full = check(client.get("/v1/model", headers=auth), "get", "/v1/model")
    from imgcls.serve.schemas import ADMIN_ONLY

    assert not ADMIN_ONLY & set(public) and set(full) >= ADMIN_ONLY  # the token shows what the public view hides
    check(client.get("/readyz"), "get", "/readyz")
    check(client.get("/livez"), "get", "/livez")
    assert check(predict(client, b"junk"), "post", "/v1/predict")["error"]["code"] == "unsupported_format"
    assert check(predict(client, digits[0][0], top_k=0), "post", "/v1/predict")["error"]["code"] == "invalid_parameter"
    check(client.post("/v1/admin/reload", headers=auth), "post", "/v1/admin/reload")
    check(client.post("/v1/admin/reload"), "post", "/v1/admin/reload")  # 401, documented as an Error
    # the documentation cannot drift quietly: an undocumented field in an answer fails validation
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**public, "bundle_path": "/srv/x"}, documented(spec, "get", "/v1/model", 200))
    ok = spec["paths"]["/v1/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Prediction"}  # generated from schemas.Prediction


def test_favicon_is_an_icon(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg") and b"</svg>" in icon.content


def test_webp_uploads_are_decoded_by_default(client: TestClient, exported_digits_bundle: Path) -> None:
    """WebP is served as predict and the folder datasets decode it (same pixel limit); GIF stays a 415."""
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        digit = d["images"][0][..., 0]
    as_png, as_webp = io.BytesIO(), io.BytesIO()
    Image.fromarray(digit, "L").save(as_png, format="PNG")
    Image.fromarray(digit, "L").save(as_webp, format="WEBP", lossless=True)
    got = client.post("/v1/predict", files={"file": ("d.webp", as_webp.getvalue(), "image/webp")})
    assert got.status_code == 200, got.text
    assert got.json()["class_id"] == predict(client, as_png.getvalue()).json()["class_id"]
    gif = io.BytesIO()
    Image.fromarray(digit, "L").save(gif, format="GIF")
    refused = client.post("/v1/predict", files={"file": ("d.gif", gif.getvalue(), "image/gif")})
    assert refused.status_code == 415 and "WEBP" in refused.json()["error"]["message"]


def test_an_unexpected_error_is_a_json_500_with_one_logged_traceback(
    exported_digits_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a route gave the client its JSON 500 but left three tracebacks of it in the log: the app's
    handler, the gateway's, and uvicorn's for the exception the gateway raised again."""
    import logging

    from imgcls.serve.model import ServedModel

    def broken(self: ServedModel) -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ServedModel, "describe_public", broken)
    with TestClient(create_app(settings(exported_digits_bundle, tmp_path))) as c:  # raises what the app raises
        with caplog.at_level(logging.ERROR):
            r = c.get("/v1/model")
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal", r.text
        assert c.get("/livez").status_code == 200
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert [rec.getMessage() for rec in tracebacks] == ["unexpected error on GET /v1/model"]
    assert "a bug" not in r.text  # the client learns nothing of the server's code
