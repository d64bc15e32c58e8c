"""Whether this process could listen on a host and port now: checked by ``router serve`` and
``router demo`` before their slow start, so that a port another process holds is one line."""

from __future__ import annotations

import socket

__all__ = ["cannot_listen"]


def cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` now, or None when it could.

    Binds each address the server will listen on, then lets go. Should something take the
    port in between, the server's own bind reports it.
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        # The addresses asyncio's create_server binds, with the same options.
        for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            try:
                probe = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this machine lacks, which the server skips too
            with probe:
                # Connections of an earlier server lingering in TIME_WAIT do not hold the port.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        return f"cannot listen on {where}: {reason}"
    return None
