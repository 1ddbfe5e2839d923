"""One keep-alive HTTP/1.1 connection to the server under test, and OAuth tokens."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from typing import Any

from .processes import BenchError


class ClientError(Exception):
    """The connection failed (refused, reset, timed out, bad response)."""


class Client:
    """One persistent HTTP/1.1 connection to the server; reconnects when it is lost."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None
        self.connects = 0

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.connects += 1
        try:
            self.conn.request(method, path, body=body, headers=headers or self.headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ClientError(f"{type(exc).__name__}: {exc}") from exc
        if response.will_close:
            self.close()
        return response.status, data

    def json(self, method: str, path: str, body: Any = None,
             expect: tuple[int, ...] = (200, 201)) -> Any:
        status, data = self.call(method, path,
                                 None if body is None else json.dumps(body).encode())
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        if status not in expect:
            raise BenchError(f"{method} {path} answered {status}: {parsed}")
        return parsed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def free_port() -> int:
    """A port nothing listens on now (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch_token(port: int, client_id: str, secret: str, scope: str | None = None) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = "grant_type=client_credentials" + (f"&scope={scope.replace(' ', '+')}" if scope else "")
    client = Client(port)
    try:
        status, data = client.call("POST", "/oauth/token", form.encode(), {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        })
    finally:
        client.close()
    if status != 200:
        raise BenchError(f"POST /oauth/token answered {status}: {data.decode(errors='replace')}")
    return json.loads(data)["access_token"]
