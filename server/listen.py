"""The listening socket, kept open across the server's restart after a device fault.

`python -m server` binds its port itself and hands aiohttp the socket. Before it executes
itself again (server/__main__.py) it leaves a duplicate of that socket open, inheritable, and
named in `LISTEN_FD_ENV`; the new process image adopts it. So a connection that arrives during
the restart waits in the socket's backlog and is answered once the new image serves, instead
of being refused while no process listens.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["BACKLOG", "LISTEN_FD_ENV", "hand_over", "listening_socket"]

log = logging.getLogger("server")

LISTEN_FD_ENV = "IMAGE_TO_MESH_LISTEN_FD"
# Connections the kernel holds before they are accepted (aiohttp's default).
BACKLOG = 128


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket handed over by the process image before this one (when it listens on
    `port`), else a new one bound to (host, port). The handed-over descriptor is taken out of
    the environment either way."""
    inherited = os.environ.pop(LISTEN_FD_ENV, None)
    if inherited is not None:
        adopted = _adopt(inherited, port)
        if adopted is not None:
            log.info("listening on the socket handed over by the last process image")
            return adopted
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address[:2], family=family, backlog=BACKLOG)


def hand_over(descriptor: int) -> None:
    """Leave `descriptor` (a duplicate of the listening socket, made while it was open) to
    the next process image this one executes."""
    os.set_inheritable(descriptor, True)
    os.environ[LISTEN_FD_ENV] = str(descriptor)


def _adopt(inherited: str, port: int) -> socket.socket | None:
    """The listening TCP socket on `port` (any port when 0) behind descriptor `inherited`,
    or None (logged) when it is not one."""
    try:
        descriptor = int(inherited)
        os.fstat(descriptor)  # raises when nothing is open there
    except (ValueError, OSError) as error:
        log.warning("%s=%r: no such descriptor (%s); binding anew", LISTEN_FD_ENV, inherited, error)
        return None
    try:
        sock = socket.socket(fileno=descriptor)
    except OSError as error:
        log.warning("%s=%r is not a socket (%s); binding anew", LISTEN_FD_ENV, inherited, error)
        return None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        bound = sock.getsockname()
        usable = (
            sock.type == socket.SOCK_STREAM
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and listening
            and (port == 0 or bound[1] == port)
        )
    except OSError:
        usable = False
    if not usable:
        log.warning(
            "%s=%r is not a TCP socket listening on port %d; binding anew",
            LISTEN_FD_ENV,
            inherited,
            port,
        )
        sock.close()
        return None
    os.set_inheritable(descriptor, False)
    return sock
