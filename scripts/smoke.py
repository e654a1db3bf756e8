"""Smoke-test a deployed imgcls server before it gets traffic: ready, the expected provider, a golden image.

    python scripts/smoke.py https://rc-abc---imgcls-serve-xyz.a.run.app \\
        --image deploy/golden/digit-8.png --label 8 --provider CUDAExecutionProvider --token "$ID_TOKEN"

Exits 1 naming the first check that failed. Standard library only (runs anywhere CI has a Python).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def call(url: str, token: str | None, body: bytes | None = None, ctype: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if ctype:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--image", type=Path, required=True, help="a golden image")
    p.add_argument("--label", required=True, help="the label the model must give it")
    p.add_argument("--provider", default=None, help="the execution provider /v1/model must report")
    p.add_argument("--version", default=None, help="the model version /v1/model must report")
    p.add_argument("--token", default=None, help="bearer token (a Cloud Run identity token)")
    p.add_argument("--wait-s", type=float, default=180.0, help="how long to wait for /readyz")
    args = p.parse_args()
    base = args.url.rstrip("/")

    deadline = time.monotonic() + args.wait_s
    while call(f"{base}/readyz", args.token)[0] != 200:
        if time.monotonic() > deadline:
            sys.exit(f"smoke: {base}/readyz never answered 200 within {args.wait_s:g} s")
        time.sleep(3)
    status, model = call(f"{base}/v1/model", args.token)
    if status != 200:
        sys.exit(f"smoke: /v1/model answered {status}")
    if args.provider and model.get("provider") != args.provider:
        sys.exit(f"smoke: the server runs on {model.get('provider')}, not {args.provider}")
    if args.version and str(model.get("version")) != args.version:
        sys.exit(f"smoke: the server serves version {model.get('version')}, not {args.version}")
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{args.image.name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + args.image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, answer = call(f"{base}/v1/predict", args.token, body, f"multipart/form-data; boundary={boundary}")
    if status != 200 or answer.get("label") != args.label:
        sys.exit(f"smoke: the golden image {args.image} got {status} {answer}, want label {args.label!r}")
    print(
        f"smoke: ok — {model.get('name')} version {model.get('version')} on {model.get('provider')}, "
        f"{args.image.name} -> {answer['label']} ({answer.get('confidence', 0):.3f})"
    )


if __name__ == "__main__":
    main()
