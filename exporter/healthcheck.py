"""The image's HEALTHCHECK: ``python -m exporter.healthcheck`` (exit 0 when healthy).

GET /healthz on 127.0.0.1 at the port of GECKO_LISTEN_ADDRESS: over plain HTTP
first, then over HTTPS when the exporter serves TLS (a web config file). The
server certificate is not verified: the check talks to its own container over
loopback and proves liveness, not identity. /healthz needs no password. A web
config that requires client certificates cannot be checked this way: run the
container with ``--no-healthcheck`` (or the orchestrator's TCP check) then.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_LISTEN = ":8187"


def _loopback_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # its own loopback listener: liveness, not identity
    return ctx


def healthy(port: str, timeout: float = 2.0) -> bool:
    for scheme, ctx in (("http", None), ("https", _loopback_tls())):
        url = f"{scheme}://127.0.0.1:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310
                return int(resp.status) == 200
        except urllib.error.HTTPError:
            return False  # it answered, not with 200
        except (OSError, http.client.HTTPException):
            continue  # nothing there, or TLS on the other end: try the next scheme
    return False


def main() -> int:
    port = os.environ.get("GECKO_LISTEN_ADDRESS", DEFAULT_LISTEN).rsplit(":", 1)[1]
    return 0 if healthy(port) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
