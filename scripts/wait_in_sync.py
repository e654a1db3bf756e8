"""Wait until a watching imgcls server serves the version its alias points at (after `models alias`).

Polls ``/v1/model``; each answer comes from one replica, so it needs ``--agree`` consecutive in-sync answers.
Fails at once when the server says it refused the wanted version (it keeps serving the old one).

    python scripts/wait_in_sync.py https://imgcls-serve-xyz.a.run.app --token "$ID_TOKEN" --timeout-s 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def model(url: str, token: str | None) -> dict:
    req = urllib.request.Request(f"{url}/v1/model", headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--token", default=None)
    p.add_argument("--timeout-s", type=float, default=300.0)
    p.add_argument("--agree", type=int, default=5, help="consecutive in-sync answers needed")
    args = p.parse_args()
    url = args.url.rstrip("/")
    deadline, streak = time.monotonic() + args.timeout_s, 0
    while streak < args.agree:
        try:
            alias = model(url, args.token).get("alias")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"{url}: {exc}; retrying", file=sys.stderr)
            alias = {}
        if alias is None:
            sys.exit(f"{url} does not watch an alias (started without --watch)")
        if alias.get("refused"):
            r = alias["refused"]
            sys.exit(
                f"{url} refused version {r.get('version')}: {r.get('error')}; it still serves {alias.get('served')}"
            )
        streak = streak + 1 if alias.get("in_sync") else 0
        if time.monotonic() > deadline:
            sys.exit(f"{url} not in sync after {args.timeout_s:g} s: {alias}")
        time.sleep(2)
    print(f"{url}: serving {alias['wanted']} ({alias['ref']})")


if __name__ == "__main__":
    main()
