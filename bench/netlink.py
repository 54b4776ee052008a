#!/usr/bin/env python3
"""A user-space link emulator: a TCP proxy that delays and rate-limits, for a kernel without netem.

Each accepted connection is forwarded to the target in both directions, each direction a
delay line: a chunk read at time t leaves at departure + delay, where departure =
max(t, the link's previous departure that way) + bytes * 8 / rate (serialisation at the
link's rate, shared by all its connections as a wire's is), in order. Readers stop reading
while more than rate * delay + 256 KiB wait on the link that way, so senders feel its rate
through TCP's own flow control. The first bytes of a connection leave
no earlier than one round trip after it was accepted: the TCP handshake a real link costs.

Threads with blocking sockets and a monotonic clock, not asyncio: asyncio's epoll timeout
rounds up to 1 ms, and the NAS link is 0.5 ms each way (time.sleep is good to ~0.1 ms).
One reader and one writer thread per direction, a deque and a Condition between them.

Measured on this machine (2 cores, loopback, `python bench/netlink.py --selftest`: 64 MiB through
the proxy on one connection, best of 3, and on 8 at once; round trips of 100 B, 200 of them):

    delay, rate              one connection  8 connections  round trip: wanted, median, p90
    0.5 ms, unlimited        18 Gbit/s       7.5 Gbit/s     1.00 ms, 1.09 ms, 1.11 ms
    0.5 ms, 1000 Mbit/s      0.996 Gbit/s    0.990 Gbit/s   1.00 ms, 1.08 ms, 1.10 ms
    1 ms, 1000 Mbit/s        0.992 Gbit/s    0.981 Gbit/s   2.00 ms, 2.08 ms, 2.10 ms
    20 ms, 100 Mbit/s        99 Mbit/s       98 Mbit/s      40.0 ms, 40.4 ms, 40.6 ms

A round trip through no proxy at all takes 0.05-0.17 ms here (two loopback hops and the
client's wake-up), so the proxy holds each direction to within about 0.05 ms of its delay
(timer slack set to 1 us; time.sleep overshoots by ~20 us, subtracted). The first round trip of
a connection is one round trip longer: the handshake.

    python bench/netlink.py --listen ADDR:PORT --target ADDR:PORT --delay-ms X --rate-mbit Y   (rate 0: unlimited)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import socket
import statistics
import sys
import threading
import time

CHUNK = 256 * 1024
UNLIMITED_QUEUE = 8 * 1024 * 1024  # back-pressure bound when the rate is unlimited
EOF = b""
EARLY = 20e-6  # what a wake-up from time.sleep overshoots by, with the timer slack at 1 us
PR_SET_TIMERSLACK = 29
WAIT = 1.0  # longest single wait on a condition: every loop re-checks whether the link closed


class Lane:
    """One direction of the link, shared by all its connections: the wire's clock and what waits for it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.departure = 0.0  # when the wire is free again
        self.queued = 0  # bytes read from any connection and not yet written


class Link:
    """The properties of one link, the same in both directions; every connection shares its two lanes."""

    def __init__(self, delay_s: float, rate_bit: float) -> None:
        self.delay, self.rate = delay_s, rate_bit
        self.limit = int(rate_bit / 8 * delay_s) + CHUNK if rate_bit else UNLIMITED_QUEUE
        self.up, self.down = Lane(), Lane()

    def serialise(self, nbytes: int) -> float:
        return nbytes * 8 / self.rate if self.rate else 0.0


class Direction:
    """One direction of a connection: read from src, hold each chunk until it is due, write to dst."""

    def __init__(self, conn: Connection, src: socket.socket, dst: socket.socket, lane: Lane, not_before: float):
        self.conn, self.src, self.dst, self.lane = conn, src, dst, lane
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.cond = threading.Condition()
        self.not_before = not_before

    def reader(self) -> None:
        link, lane = self.conn.link, self.lane
        while not self.conn.closed:
            with lane.cond:
                while lane.queued > link.limit and not self.conn.closed:
                    lane.cond.wait(WAIT)
            data = self.src.recv(CHUNK)
            now = time.monotonic()
            with self.cond:
                if self.conn.closed:
                    return
                with lane.cond:  # the wire is shared: chunks of all connections leave one after another
                    lane.departure = max(now, self.not_before, lane.departure) + link.serialise(len(data))
                    lane.queued += len(data)
                    due = lane.departure + link.delay
                self.queue.append((due, data))
                self.cond.notify()
            if not data:
                return

    def writer(self) -> None:
        while not self.conn.closed:
            with self.cond:
                while not self.queue and not self.conn.closed:
                    self.cond.wait(WAIT)
                if self.conn.closed:
                    return
                due, data = self.queue.popleft()
            wait = due - time.monotonic() - EARLY
            if wait > 0:
                time.sleep(wait)
            if not data:
                self.dst.shutdown(socket.SHUT_WR)  # the half-close, as late as the data before it
                return
            try:
                self.dst.sendall(data)
            finally:
                self.release(len(data))

    def release(self, nbytes: int) -> None:
        with self.lane.cond:
            self.lane.queued -= nbytes
            self.lane.cond.notify_all()

    def drop(self) -> None:
        """The connection closed: what it still held no longer waits for the wire."""
        with self.cond:
            held = sum(len(data) for _, data in self.queue)
            self.queue.clear()
            self.cond.notify_all()
        self.release(held)


class Connection:
    """A client and its upstream socket; four threads; any error closes both sides."""

    def __init__(self, link: Link, client: socket.socket, upstream: socket.socket, accepted: float) -> None:
        self.link, self.client, self.upstream = link, client, upstream
        self.closed = False
        self.running = 4
        self.lock = threading.Lock()
        up = Direction(self, client, upstream, link.up, accepted + 2 * link.delay)  # the handshake's round trip
        down = Direction(self, upstream, client, link.down, accepted)
        self.directions = (up, down)
        for d in self.directions:
            for fn in (d.reader, d.writer):
                threading.Thread(target=self._run, args=(fn,), daemon=True).start()

    def _run(self, fn) -> None:
        try:
            fn()
        except OSError:
            self.close()
        finally:
            with self.lock:
                self.running -= 1
                last = self.running == 0
            if last:
                self.close()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv or send
            s.close()
        for d in self.directions:
            d.drop()
            with d.lane.cond:
                d.lane.cond.notify_all()


def precise_sleep() -> None:
    """Timer slack 1 us instead of 50 us for this thread and every thread it starts: sleeps end on time."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def nodelay(s: socket.socket) -> socket.socket:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def connect_upstream(link: Link, client: socket.socket, target: tuple[str, int], accepted: float) -> None:
    try:
        upstream = nodelay(socket.create_connection(target, timeout=10))
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    Connection(link, client, upstream, accepted)


def serve(listen: tuple[str, int], target: tuple[str, int], link: Link, stop: threading.Event | None = None,
          ready: threading.Event | None = None) -> None:  # fmt: skip
    """Accept until ``stop`` is set (checked every second); each connection in its own threads."""
    stop = stop or threading.Event()
    with socket.create_server(listen, backlog=128, reuse_port=False) as server:
        server.settimeout(WAIT)
        if ready:
            ready.set()
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            accepted = time.monotonic()
            client.settimeout(None)
            args = (link, nodelay(client), target, accepted)
            threading.Thread(target=connect_upstream, args=args, daemon=True).start()


# -- Self-test: throughput and delay through a proxy on loopback -----------------------------------


def _sink_and_echo(server: socket.socket) -> None:
    """Echo each connection's bytes back (the ping test), or count them (the throughput test)."""
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=_echo, args=(nodelay(conn),), daemon=True).start()


def _echo(conn: socket.socket) -> None:
    with conn:
        mode = conn.recv(1)
        while data := conn.recv(CHUNK):
            if mode == b"e":
                conn.sendall(data)
        conn.sendall(b"k")  # after the client's half-close: everything arrived


def _throughput(addr: tuple[str, int], total: int) -> float:
    block = b"x" * CHUNK
    with nodelay(socket.create_connection(addr, timeout=30)) as s:
        t0 = time.monotonic()
        s.sendall(b"c")
        for _ in range(total // CHUNK):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b"k"
        return total * 8 / (time.monotonic() - t0)


def _parallel_throughput(addr: tuple[str, int], total: int, n: int) -> float:
    """n connections at once, each sending total / n: the link's rate is shared by all of them."""
    threads = [threading.Thread(target=_throughput, args=(addr, total // n)) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return total * 8 / (time.monotonic() - t0)


def _round_trips(addr: tuple[str, int], count: int) -> list[float]:
    times = []
    with nodelay(socket.create_connection(addr, timeout=30)) as s:
        s.sendall(b"e")
        for _ in range(count):
            t0 = time.monotonic()
            s.sendall(b"p" * 100)
            got = 0
            while got < 100:
                got += len(s.recv(100))
            times.append(time.monotonic() - t0)
    return times


def selftest(cases: list[tuple[float, float]], total: int = 64 << 20) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_sink_and_echo, args=(server,), daemon=True).start()
    target = server.getsockname()
    for delay_ms, rate_mbit in cases:
        stop, ready = threading.Event(), threading.Event()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            listen = probe.getsockname()
        link = Link(delay_ms / 1000, rate_mbit * 1e6)
        threading.Thread(target=serve, args=(listen, target, link, stop, ready), daemon=True).start()
        ready.wait(5)
        rate = max(_throughput(listen, total) for _ in range(3))
        shared = _parallel_throughput(listen, total, 8)
        rtt = sorted(_round_trips(listen, 200))
        print(f"delay {delay_ms} ms, rate {rate_mbit or 'unlimited'} Mbit/s: {rate / 1e9:.3f} Gbit/s, 8 connections "
              f"{shared / 1e9:.3f} Gbit/s together; round trip "
              f"{2 * delay_ms:.2f} ms wanted, {statistics.median(rtt) * 1e3:.3f} ms median, "
              f"{rtt[int(len(rtt) * 0.9)] * 1e3:.3f} ms p90, {rtt[-1] * 1e3:.3f} ms max", flush=True)  # fmt: skip
        stop.set()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", help="ADDR:PORT to accept on")
    parser.add_argument("--target", help="ADDR:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    parser.add_argument("--rate-mbit", type=float, default=0.0, help="each direction's rate (0: unlimited)")
    parser.add_argument("--selftest", action="store_true", help="measure throughput and delay on loopback")
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # a writer whose chunk is due waits less for the interpreter lock
    precise_sleep()
    if args.selftest:
        selftest([(0.0, 0.0), (0.5, 0.0), (0.5, 1000.0), (1.0, 1000.0), (20.0, 100.0)])
        return 0
    if not (args.listen and args.target):
        parser.error("--listen and --target are needed (or --selftest)")
    link = Link(args.delay_ms / 1000, args.rate_mbit * 1e6)
    print(f"netlink {args.listen} -> {args.target}: {args.delay_ms} ms, {args.rate_mbit or 'unlimited'} Mbit/s",
          flush=True)  # fmt: skip
    serve(parse_addr(args.listen), parse_addr(args.target), link)
    return 0


if __name__ == "__main__":
    sys.exit(main())
