"""The listening socket handed over across the restart (server/listen.py)."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from server.listen import LISTEN_FD_ENV, hand_over, listening_socket


@pytest.fixture(autouse=True)
def _no_handed_over_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LISTEN_FD_ENV, raising=False)


def _accepts(server: socket.socket, client: socket.socket) -> bool:
    """`client` (connected) is accepted by `server`, and bytes pass."""
    server.settimeout(5)
    accepted, _ = server.accept()
    with accepted:
        client.sendall(b"ping")
        return accepted.recv(4) == b"ping"


def test_without_a_handed_over_socket_it_binds_one() -> None:
    with listening_socket("127.0.0.1", 0) as server:
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        port = server.getsockname()[1]
        assert port > 0 and not os.get_inheritable(server.fileno())
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert _accepts(server, client)


def test_a_handed_over_socket_keeps_the_connections_made_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = listening_socket("127.0.0.1", 0)
    port = old.getsockname()[1]
    kept = os.dup(old.fileno())  # what the server keeps while it serves
    old.close()  # aiohttp closes its own at shutdown
    hand_over(kept)
    assert os.get_inheritable(kept) and os.environ[LISTEN_FD_ENV] == str(kept)
    # A client arriving between the two process images: queued, not refused.
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as client,  # connects first
        listening_socket("127.0.0.1", port) as adopted,
    ):
        assert adopted.fileno() == kept and adopted.getsockname()[1] == port
        assert LISTEN_FD_ENV not in os.environ  # not handed on to children
        assert not os.get_inheritable(kept)
        assert _accepts(adopted, client)


@pytest.mark.parametrize("what", ["closed", "not a number", "a pipe", "another port"])
def test_a_handed_over_descriptor_that_is_no_listening_socket_is_not_used(
    what: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    opened: list[int] = []
    other = None
    if what == "closed":
        reader, writer = os.pipe()
        os.close(reader)
        os.close(writer)
        value = str(reader)
    elif what == "not a number":
        value = "fd3"
    elif what == "a pipe":
        reader, writer = os.pipe()
        opened += [reader, writer]
        value = str(reader)
    else:
        other = listening_socket("127.0.0.1", 0)
        value = str(os.dup(other.fileno()))
    monkeypatch.setenv(LISTEN_FD_ENV, value)
    with socket.create_server(("127.0.0.1", 0)) as probe:  # a port nobody listens on now
        port = probe.getsockname()[1]
    with caplog.at_level(logging.WARNING, "server"), listening_socket("127.0.0.1", port) as server:
        assert server.getsockname()[1] == port
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    assert "binding anew" in caplog.text and LISTEN_FD_ENV not in os.environ
    if what == "another port":
        # The mismatched socket was closed; the original still listens.
        with pytest.raises(OSError):
            os.fstat(int(value))
        other.close()
    for descriptor in opened:
        os.close(descriptor)
