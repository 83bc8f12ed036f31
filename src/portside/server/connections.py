"""Idle connections: what granian does not time out, each worker closes itself.

granian 2.8.9 (hyper underneath) times out a request head (`header_read_timeout`) only once
its first byte has arrived, or, on a kept-alive HTTP/1 connection, from the previous response; it
never times out a connection that sends no byte at all, a request body that stops arriving, or
an idle HTTP/2 connection. Each holds one of the worker's connection permits (`backpressure`)
for ever, and enough of them lock every client out. So each worker runs a
watchdog thread that looks at its own TCP connections on the listening port (through
/proc/self/fd and the kernel's TCP_INFO: when data last went in or out, and whether any byte
ever arrived) and shuts down those that are idle:

- no request in progress and not one byte received since connecting: after http_header_timeout;
- no request in progress (an idle HTTP/2 connection; hyper closes an HTTP/1 one that waits for
  a request head at http_header_timeout if sooner): after http_idle_timeout;
- a request in progress that waits for the client (the app awaits its body): after
  http_idle_timeout with nothing received nor sent. A slow upload whose bytes keep flowing is
  never cut, nor is a request the server itself is busy with, however long.

Which connection has a request in progress, and whether the app is waiting for its body, is
known from the ASGI calls: `ConnectionGuard` wraps the app and counts them by the client's
address and port, which are the connection's peer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("portside.server")

# struct tcp_info (linux/tcp.h): tcpi_state is byte 0; tcpi_last_data_sent and
# tcpi_last_data_recv (milliseconds ago) are the u32 at 44 and 52; tcpi_bytes_received (Linux 4.1)
# the u64 at 128.
TCP_INFO_SIZE: Final = 136
TCP_ESTABLISHED: Final = 1
TCP_CLOSE_WAIT: Final = 8

Peer = tuple[str, int]


def _peer(host: str, port: int) -> Peer:
    # An IPv4 client of a dual-stack socket may be spelled either way.
    return host.removeprefix("::ffff:"), port


class Activity:
    """Requests in progress, and body reads pending, by client address and port."""

    def __init__(self) -> None:
        self.requests: Counter[Peer] = Counter()
        self.reading: Counter[Peer] = Counter()

    def snapshot(self) -> tuple[set[Peer], set[Peer]]:
        """(peers with a request in progress, peers whose app waits for body bytes); copied
        from the watchdog's thread while the event loop changes them (a dict copy holds the GIL)."""
        return set(self.requests.copy()), set(self.reading.copy())


class ConnectionGuard:
    """ASGI wrapper that records, for the watchdog, which connections have a request in progress
    and whether the app is waiting for the client's body bytes."""

    def __init__(self, app: ASGIApp, activity: Activity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        peer = _peer(client[0], client[1])
        requests, reading = self.activity.requests, self.activity.reading

        async def receive_tracked() -> Message:
            reading[peer] += 1
            try:
                return await receive()
            finally:
                _drop(reading, peer)

        requests[peer] += 1
        try:
            await self.app(scope, receive_tracked, send)
        finally:
            _drop(requests, peer)


def _drop(counter: Counter[Peer], peer: Peer) -> None:
    counter[peer] -= 1
    if counter[peer] <= 0:
        del counter[peer]


@dataclass(frozen=True)
class TcpState:
    state: int
    ms_since_sent: int
    ms_since_received: int
    bytes_received: int


def tcp_state(sock: socket.socket) -> TcpState | None:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    if len(raw) < TCP_INFO_SIZE:
        return None
    (sent,) = struct.unpack_from("=I", raw, 44)
    (received,) = struct.unpack_from("=I", raw, 52)
    (received_bytes,) = struct.unpack_from("=Q", raw, 128)
    return TcpState(raw[0], sent, received, received_bytes)


class Watchdog:
    """Closes this process's idle TCP connections on port (see the module's docstring)."""

    def __init__(
        self,
        port: int,
        activity: Activity,
        header_timeout: float,
        idle_timeout: float,
        fd_folder: str = "/proc/self/fd",
    ) -> None:
        self.port = port
        self.activity = activity
        self.header_ms = int(header_timeout * 1000)
        self.idle_ms = int(idle_timeout * 1000)
        self.interval = min(max(min(header_timeout, idle_timeout) / 4, 0.25), 5.0)
        self._fd_folder = fd_folder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._not_ours: set[str] = set()  # socket inodes seen to be something else

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="portside-idle", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # never let the watchdog die: the next sweep may do better
                log.exception("idle connection sweep failed")

    def sweep(self) -> int:
        """Shut down the idle connections once; how many."""
        busy, reading = self.activity.snapshot()
        closed = 0
        seen: set[str] = set()
        for inode, sock in self._sockets():
            seen.add(inode)
            with sock:
                reason = self._idle(sock, busy, reading)
                if reason is None:
                    continue
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    closed += 1
                    log.debug("closed connection from %s: %s", sock.getpeername()[0], reason)
        self._not_ours &= seen
        return closed

    def _sockets(self) -> Iterator[tuple[str, socket.socket]]:
        """Duplicates of this process's TCP sockets with port as their local port; the caller
        closes them."""
        try:
            fds = os.listdir(self._fd_folder)
        except OSError:
            return
        for name in fds:
            try:
                target = os.readlink(f"{self._fd_folder}/{name}")
            except OSError:
                continue
            if not target.startswith("socket:") or target in self._not_ours:
                continue
            try:
                copy = os.dup(int(name))
            except OSError:
                continue
            try:
                sock = socket.socket(fileno=copy)
            except OSError:
                os.close(copy)
                continue
            if (
                sock.family not in (socket.AF_INET, socket.AF_INET6)
                or sock.type != socket.SOCK_STREAM
                or _local_port(sock) != self.port
            ):
                self._not_ours.add(target)
                sock.close()
                continue
            yield target, sock

    def _idle(self, sock: socket.socket, busy: set[Peer], reading: set[Peer]) -> str | None:
        """Why the connection should be closed, or None."""
        try:
            address = sock.getpeername()
        except OSError:
            return None  # the listening socket, or already gone
        info = tcp_state(sock)
        if info is None or info.state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
            return None
        peer = _peer(address[0], address[1])
        quiet = min(info.ms_since_sent, info.ms_since_received)
        if peer in busy:
            if peer in reading and quiet >= self.idle_ms:
                return f"no body bytes for {quiet / 1000:.0f}s"
            return None  # the server is working on it
        if info.bytes_received == 0 and quiet >= self.header_ms:
            return f"sent nothing in {quiet / 1000:.0f}s"
        if quiet >= self.idle_ms:
            return f"idle for {quiet / 1000:.0f}s"
        return None


def _local_port(sock: socket.socket) -> int | None:
    try:
        port: int = sock.getsockname()[1]
    except OSError:
        return None
    return port


def raise_open_file_limit() -> None:
    """Each connection is an open file: take the soft limit up to the hard one (systemd's
    default soft limit, 1024, would otherwise cap a worker below its connection budget)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def guard(
    app: ASGIApp, port: int, header_timeout: float, idle_timeout: float
) -> tuple[ConnectionGuard, Callable[[], None]]:
    """app wrapped for the watchdog, and the watchdog started; the callable stops it."""
    activity = Activity()
    watchdog = Watchdog(port, activity, header_timeout, idle_timeout)
    watchdog.start()
    return ConnectionGuard(app, activity), watchdog.stop
