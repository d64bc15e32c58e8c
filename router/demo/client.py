"""The demo's HTTP client of a gateway: one keep-alive connection, and the gateway's
``/config`` as the simulator needs it."""

from __future__ import annotations

import http.client
import urllib.parse
from dataclasses import dataclass
from typing import Any

import orjson

REQUEST_TIMEOUT_S = 30.0


class SimulationError(Exception):
    """The gateway cannot be reached, or does not take the held-out rows."""


@dataclass(frozen=True)
class GatewayInfo:
    """What the simulator needs to know of a gateway: its features and its sticky key."""

    features: tuple[str, ...]
    sticky_key: str | None  # "header:<name>" or "body:<field>", as in the YAML
    experiment: str


class Connection:
    """One keep-alive HTTP/1.1 connection to the gateway, reopened after a failure."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SimulationError(f"not an http(s) URL: {url}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port
        except ValueError as exc:  # "Port out of range 0-65535", or not a number
            raise SimulationError(f"not a usable URL: {url}: {exc}") from None
        self._prefix = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=REQUEST_TIMEOUT_S)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            self._conn.request(method, self._prefix + path, body=body, headers=all_headers)
            response = self._conn.getresponse()
            return response.status, response.read()
        except BaseException:
            self.close()  # the connection is in an unknown state: the next call opens a new one
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def get_json(url: str, path: str) -> tuple[int, Any]:
    """``GET url + path``: the status and the decoded JSON body (None when it is not JSON).

    Raises :class:`SimulationError` when the gateway cannot be reached.
    """
    connection = Connection(url)
    try:
        status, body = connection.request("GET", path)
    except OSError as exc:
        raise SimulationError(f"cannot reach the gateway at {url}: {exc}") from None
    finally:
        connection.close()
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, None


def gateway_info(url: str) -> GatewayInfo:
    """Read ``GET /config`` of the gateway at ``url``."""
    status, payload = get_json(url, "/config")
    if status != 200 or not isinstance(payload, dict):
        raise SimulationError(f"GET {url}/config answered {status}")
    return GatewayInfo(features=tuple(payload["models"]["champion"]["features"]),
                       sticky_key=payload["config"]["traffic"].get("sticky_key"),
                       experiment=str(payload["config"]["experiment"]))
