"""Container HEALTHCHECK probe for `syncd run`: exit 0 when /healthz answers 200, else 1.

Standard library only, so the runtime image needs no curl/wget. The URL defaults to the
daemon's default `metrics.listen`; set SYNCD_HEALTH_URL when the config listens elsewhere.
Proxies from the environment are ignored: the probe must reach the daemon itself.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9647/healthz"


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """(healthy, one-line reason) for a GET of `url`."""
    if not url.startswith(("http://", "https://")):
        return False, f"SYNCD_HEALTH_URL must be an http(s) URL, got {url!r}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"
    if status == 200:
        return True, f"{url}: 200"
    return False, f"{url}: HTTP {status}"


def main() -> int:
    url = os.environ.get("SYNCD_HEALTH_URL") or DEFAULT_URL
    try:
        timeout = float(os.environ.get("SYNCD_HEALTH_TIMEOUT") or "3")
    except ValueError:
        timeout = 3.0
    healthy, reason = probe(url, timeout)
    # Docker keeps the probe's output in `docker inspect`; one line says why.
    (sys.stdout if healthy else sys.stderr).write(reason + "\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
