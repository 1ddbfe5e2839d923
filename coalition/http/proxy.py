"""The client's own address and scheme behind a reverse proxy.

Behind nginx every request comes from nginx's address. nginx says who the client was in
``X-Forwarded-For`` (and ``X-Forwarded-Proto`` whether it spoke TLS), but anyone can send
those headers: they are believed only when the request comes straight from one of
``TRUSTED_PROXIES``, and then only their last hop (the one nginx appended), with werkzeug's
``ProxyFix``. From any other address they are ignored, so a client that talks to gunicorn
directly cannot choose the address its rate limit and log lines are counted under.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_address, ip_network
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxies:
    """WSGI middleware: ``ProxyFix`` (one proxy) for requests from ``proxies`` only."""

    def __init__(self, wsgi_app: Any, proxies: Iterable[str]) -> None:
        self.wsgi_app = wsgi_app
        self.proxied = ProxyFix(wsgi_app, x_for=1, x_proto=1)
        self.networks = tuple(ip_network(proxy, strict=False) for proxy in proxies)

    def _trusted(self, address: str) -> bool:
        try:
            peer = ip_address(address)
        except ValueError:  # a Unix socket: no address
            return False
        return any(peer in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.networks and self._trusted(environ.get("REMOTE_ADDR", "")):
            return self.proxied(environ, start_response)
        return self.wsgi_app(environ, start_response)


def init_proxy(app: Flask) -> None:
    """Believe the forwarding headers of ``TRUSTED_PROXIES`` (none by default)."""
    app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
        app.wsgi_app, app.config["TRUSTED_PROXIES"])
