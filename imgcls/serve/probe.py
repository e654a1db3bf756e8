"""A container HEALTHCHECK: ``python3 -m imgcls.serve.probe [PATH]`` exits 0 when the local server answers 200.

It asks ``http://127.0.0.1:$PORT/livez`` (PORT defaults to 8080, the image's default) with the standard
library only, so the probe itself costs a few milliseconds and imports nothing of the server.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/livez"
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
