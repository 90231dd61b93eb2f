"""Fail fast offline: whether a download host answers, without waiting for a library's timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
import urllib.request


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host (or the https proxy) opens within ``timeout``."""
    target = urllib.parse.urlsplit(urllib.request.getproxies().get("https") or url)
    address = (target.hostname, target.port or (443 if target.scheme == "https" else 80))
    ok: list[bool] = []

    def probe():
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=timeout):
            ok.append(True)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok)
