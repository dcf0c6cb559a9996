"""The counting HTTP/1.1 proxy in front of every benchmark registry.

Both tools reach the registries only through these proxies, so both pay
the same small overhead (registry.measure_proxy measures it once: a large
blob fetched directly and through the proxy).  One thread per connection;
keep-alive, Content-Length and chunked bodies, 100-continue.
Content-Length bodies move with splice(2) between sockets with large
buffers; chunked bodies are forwarded a read buffer at a time, parsing only
the chunk-size lines.  The proxy refuses TLS: a connection whose first byte
is a TLS handshake record is closed, which is how the HTTPS probes of both
tools fail (counted as `tls_refused`, not as requests).

With rtt_ms > 0 the proxy also stands in for a wide-area network between
the tool and the registry (see _Latency): messages are held back in the
connection's own thread, so the kernel needs no traffic shaping (tc/netem),
concurrent connections wait independently, and waiting is sleeping, not CPU.
Requests are counted when they arrive, before any wait.

Requests in flight: a request is in flight from when its head reaches the
proxy until its response has been forwarded in full (or its connection
ended); take() reports the time-weighted mean over the span from the first
request to the last response, and the maximum (harness/budget.py).

With a budget (N, W) the proxy also plays a rate-limited registry: it
answers at most N requests per fixed window of W seconds (every request
counts, whatever its method or path) and refuses the rest itself with
`429 Too Many Requests`, `Retry-After: <seconds to the end of the window,
rounded up>`, `ratelimit-limit: N;w=W`, `ratelimit-remaining: 0;w=W` and a
distribution error body (TOOMANYREQUESTS), without forwarding them; a
refused request's body is read and dropped, so the connection stays
usable.  The answers it forwards carry `ratelimit-limit` and
`ratelimit-remaining` (what is left of the window's budget).  The decision
is taken when the request would reach the registry (after RTT/2).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from harness import MIB
from harness.budget import RequestBudget, inflight_stats

SOCKET_BUFFER = 4 * MIB
PIPE_SIZE = 1 * MIB
RECV_SIZE = 1 * MIB
MAX_HEAD = 256 * 1024
TLS_HANDSHAKE = 0x16  # first byte of a TLS ClientHello record

def _sysctl_int(name: str) -> int:
    try:
        return int(Path("/proc/sys", *name.split(".")).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def tune_socket(s: socket.socket) -> None:
    """No Nagle delay; large socket buffers where the kernel allows them.

    Setting SO_RCVBUF/SO_SNDBUF turns the kernel's buffer auto-tuning off, so
    they are set only when the limit (net.core.[rw]mem_max) admits the
    requested size, or with the *FORCE variants (root); otherwise auto-tuning
    is left alone.
    """
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt, force, limit in (
        (socket.SO_RCVBUF, 33, "net.core.rmem_max"),  # SO_RCVBUFFORCE
        (socket.SO_SNDBUF, 32, "net.core.wmem_max"),  # SO_SNDBUFFORCE
    ):
        try:
            if _sysctl_int(limit) >= SOCKET_BUFFER:
                s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            else:
                s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            pass


class _Latency:
    """The propagation delay of one proxied connection over a simulated WAN.

    A message that reached the proxy at time t is forwarded at t + RTT/2
    (requests towards the registry, responses towards the tool), which is
    when it would have crossed a path of that round-trip time.  Only the
    start of a message is held: its body then streams at loopback speed, so
    bandwidth and TCP slow start are not modelled, only latency.  HTTP/1.1
    without pipelining (as both tools use it) waits for each response
    before the next request, so one thread per connection holding its own
    messages gives each connection its own, independent delay.

    A new connection also owes its TCP handshake: on loopback connect()
    returns at once and the tool sends straight away, but over the network
    its first byte could leave only one RTT after connecting.  So the first
    request is not forwarded before opened + RTT + RTT/2.
    """

    def __init__(self, rtt_s: float, opened: float):
        self.rtt = rtt_s
        self.half = rtt_s / 2
        self.ready = opened + rtt_s  # when the handshake would be done
        self.first = True

    @staticmethod
    def _until(t: float) -> None:
        wait = t - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _sent(self, arrived: float) -> float:
        """When a message from the tool that reached the proxy at `arrived`
        could have left the tool: the first one waits for the handshake."""
        sent = max(arrived, self.ready) if self.first else arrived
        self.first = False
        return sent

    def request(self, arrived: float) -> None:
        """Holds a request that reached the proxy at `arrived` (monotonic)."""
        if self.rtt:
            self._until(self._sent(arrived) + self.half)

    def response(self, arrived: float) -> None:
        """Holds a response (or interim response) from the registry."""
        if self.rtt:
            self._until(arrived + self.half)

    def round_trip(self, arrived: float) -> None:
        """Holds an answer the proxy gives itself in the registry's place
        (100 Continue, the refusal of a TLS ClientHello): the message had to
        reach the registry and the answer come back."""
        if self.rtt:
            self._until(self._sent(arrived) + self.rtt)


class _Peer:
    """One side of a proxied connection: the socket and bytes read ahead."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.pos = 0
        self.filled_at = 0.0  # monotonic time of the last read that got bytes

    @property
    def avail(self) -> int:
        return len(self.buf) - self.pos

    def fill(self) -> bool:
        chunk = self.sock.recv(RECV_SIZE)
        if not chunk:
            return False
        self.filled_at = time.monotonic()
        self.buf = chunk if self.pos == len(self.buf) else self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def read_head(self) -> bytes | None:
        """The next message head including the blank line; None at a clean EOF."""
        while True:
            end = self.buf.find(b"\r\n\r\n", self.pos)
            if end >= 0:
                head = self.buf[self.pos:end + 4]
                self.pos = end + 4
                return head
            if self.avail > MAX_HEAD:
                raise OSError("message head too large")
            if not self.fill():
                if self.avail:
                    raise OSError("connection closed inside a message head")
                return None


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """(start line, headers with lower-case names; repeated ones joined by ',')."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return lines[0], headers


def _tokens(value: str | None) -> list[str]:
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


class _Discard:
    """Where the body of a refused request goes: nowhere."""

    @staticmethod
    def sendall(data: bytes | memoryview) -> None:
        pass


def _too_many_requests(method: str, budget: RequestBudget, retry: int, close: bool) -> bytes:
    """The whole 429 answer to a request over the budget."""
    body = json.dumps({"errors": [{
        "code": "TOOMANYREQUESTS",
        "message": f"request budget of {budget.limit} per {budget.window_s:g}s used up; retry in {retry}s",
    }]}).encode()
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry}\r\n"
        f"ratelimit-limit: {budget.limit};{budget.policy}\r\n"
        f"ratelimit-remaining: 0;{budget.policy}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


class _Connection:
    """One proxied connection: the tool's side, the registry's side (opened
    at the first request forwarded), the splice pipe, the latency."""

    def __init__(self, client: _Peer, latency: _Latency):
        self.client = client
        self.latency = latency
        self.upstream: _Peer | None = None
        self.pipe: tuple[int, int] | None = None

    def upstream_peer(self, addr: tuple[str, int], splice_ok: bool) -> _Peer:
        if self.upstream is None:
            usock = socket.create_connection(addr)
            self.upstream = _Peer(usock)
            tune_socket(usock)
            if splice_ok:
                self.pipe = os.pipe()
                try:
                    fcntl.fcntl(self.pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                except (OSError, AttributeError):
                    pass
        return self.upstream

    def close(self) -> None:
        self.client.sock.close()
        if self.upstream is not None:
            self.upstream.sock.close()
        if self.pipe:
            os.close(self.pipe[0])
            os.close(self.pipe[1])
            self.pipe = None


class CountingProxy:
    """HTTP/1.1 forwarding proxy in front of one registry that counts requests.

    Listens on an ephemeral 127.0.0.1 port; every accepted connection gets
    a thread and its own upstream connection (keep-alive on both sides).
    Heads are parsed; bodies (Content-Length, chunked, or until close) are
    forwarded unchanged with splice(2) through a pipe where possible, so
    payload bytes are never copied into the interpreter.  The Host header is
    kept, so the registry's upload Locations point back at the proxy.  A
    connection that starts with a TLS handshake record is closed.
    rtt_ms > 0 adds the latency of a network with that round-trip time
    (see _Latency); rtt_s may be changed between runs (new connections
    take the value they find).  budget=(N, W) refuses requests over N per
    W seconds with 429 (see the module's docstring).
    """

    splice_ok = hasattr(os, "splice")

    def __init__(self, upstream_port: int, label: str, rtt_ms: float = 0.0,
                 budget: tuple[int, float] | None = None):
        self.upstream = ("127.0.0.1", upstream_port)
        self.budget = RequestBudget(*budget) if budget else None
        self.label = label
        self.rtt_s = rtt_ms / 1000
        self.lock = threading.Lock()
        self._zero()
        # What the last take() returned: the per-proxy split of a run whose
        # counters were merged over several proxies (source and target).
        self.last: dict[str, Any] = {}
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._accept_loop, name=f"proxy-{label}", daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _zero(self) -> None:
        self.requests = 0
        self.by_method: dict[str, int] = {}
        self.connections = 0
        self.tls_refused = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.refused = 0
        # (monotonic time, +1) when a request's head arrives, (time, -1)
        # when its response has been forwarded: requests in flight.
        self.inflight_events: list[tuple[float, int]] = []
        if self.budget:
            self.budget.reset()

    def take(self) -> dict[str, Any]:
        """The counters since the last take(), which resets them; also kept
        as `last` (without the in-flight events, which merge_traffic uses
        to count the requests in flight of several proxies together).  With
        a budget, its account is under "budget"."""
        with self.lock:
            events = self.inflight_events
            out: dict[str, Any] = {
                "requests": self.requests,
                "by_method": dict(sorted(self.by_method.items())),
                "connections": self.connections,
                "tls_refused": self.tls_refused,
                "bytes_to_registry": self.bytes_up,
                "bytes_from_registry": self.bytes_down,
                "refused_429": self.refused,
                **inflight_stats(events),
            }
            if self.budget:
                out["budget"] = self.budget.take()
            self._zero()
            self.last = dict(out)
        out["inflight_events"] = events
        return out

    def close(self) -> None:
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- one connection ----------------------------------------------------

    def _serve(self, csock: socket.socket) -> None:
        latency = _Latency(self.rtt_s, time.monotonic())
        conn = _Connection(_Peer(csock), latency)
        try:
            tune_socket(csock)
            client = conn.client
            if not client.fill():
                return
            if client.buf[0] == TLS_HANDSHAKE:
                with self.lock:
                    self.tls_refused += 1
                # Over a network the tool learns of the refusal only after
                # the handshake and the ClientHello's round trip.
                latency.round_trip(client.filled_at)
                return
            with self.lock:
                self.connections += 1
            while True:
                head = client.read_head()
                if head is None:
                    return
                start, headers = parse_head(head)
                method, _, rest = start.partition(" ")
                method = method.upper()
                arrived = client.filled_at
                with self.lock:
                    self.requests += 1
                    self.by_method[method] = self.by_method.get(method, 0) + 1
                    self.inflight_events.append((arrived, 1))
                try:
                    keep = self._exchange(conn, head, headers, method, rest.split(" ", 1)[0], arrived)
                finally:
                    with self.lock:
                        self.inflight_events.append((time.monotonic(), -1))
                if not keep:
                    return
        except (OSError, ValueError) as e:
            if not self.closed and len(self.errors) < 20:
                self.errors.append(str(e))
        finally:
            conn.close()

    def _refuse(self, conn: "_Connection", headers: dict[str, str], method: str, retry: int,
                expect: bool) -> bool:
        """Answers a request over the budget with 429 without forwarding it;
        whether the connection goes on."""
        # A body announced with 100-continue may or may not follow a final
        # answer: the connection is closed instead of guessing.
        if not expect:
            self._body(conn.client, _Discard(), headers, request=True, pipe=None)
        conn.latency.response(time.monotonic())
        close = expect or "close" in _tokens(headers.get("connection"))
        conn.client.sock.sendall(_too_many_requests(method, self.budget, retry, close))
        return not close

    def _exchange(self, conn: "_Connection", head: bytes, headers: dict[str, str], method: str, path: str,
                  arrived: float) -> bool:
        """Forwards one request and its response; whether the connection goes on."""
        client, latency = conn.client, conn.latency
        csock = client.sock
        expect = "100-continue" in _tokens(headers.get("expect"))
        ratelimit = b""
        if self.budget:
            # The registry decides when the request reaches it.
            latency.request(arrived)
            ok, left, retry = self.budget.admit(f"{method} {path}", time.monotonic())
            if not ok:
                with self.lock:
                    self.refused += 1
                return self._refuse(conn, headers, method, retry, expect)
            ratelimit = (f"ratelimit-limit: {self.budget.limit};{self.budget.policy}\r\n"
                         f"ratelimit-remaining: {left};{self.budget.policy}\r\n").encode()
        upstream = conn.upstream_peer(self.upstream, self.splice_ok)
        pipe = conn.pipe
        if expect:
            # Answered here; the registry gets the request without it.
            latency.round_trip(arrived)
            csock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = b"\r\n".join(l for l in head.split(b"\r\n") if not l.lower().startswith(b"expect:"))
            # The body leaves the tool only now.
            arrived = time.monotonic()
        latency.request(arrived)
        upstream.sock.sendall(head)
        n = self._body(client, upstream.sock, headers, request=True, pipe=pipe)
        with self.lock:
            self.bytes_up += n
        while True:
            rhead = upstream.read_head()
            if rhead is None:
                return False
            status_line, rheaders = parse_head(rhead)
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            interim = 100 <= status < 200 and status != 101
            if ratelimit and not interim:
                rhead = rhead[:-2] + ratelimit + b"\r\n"
            latency.response(upstream.filled_at)
            csock.sendall(rhead)
            if not interim:
                break  # else the final response follows
        bodiless = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        n = 0 if bodiless else self._body(upstream, csock, rheaders, request=False, pipe=pipe)
        with self.lock:
            self.bytes_down += max(n, 0)
        if n < 0 or "close" in _tokens(headers.get("connection")) or "close" in _tokens(rheaders.get("connection")):
            return False
        return not (status_line.startswith("HTTP/1.0") and "keep-alive" not in _tokens(rheaders.get("connection")))

    def _body(self, src: _Peer, dst: socket.socket, headers: dict[str, str], request: bool,
              pipe: tuple[int, int] | None) -> int:
        """Forwards one message body; returns its size, or -1 if it ended with the connection."""
        if "chunked" in _tokens(headers.get("transfer-encoding")):
            return self._chunked(src, dst, pipe)
        if "content-length" in headers:
            n = int(headers["content-length"].split(",")[0])
            self._exact(src, dst, n, pipe)
            return n
        if request:
            return 0
        # A response delimited by the end of the connection.
        while True:
            if src.avail:
                dst.sendall(memoryview(src.buf)[src.pos:])
                src.pos = len(src.buf)
            if not src.fill():
                return -1

    def _exact(self, src: _Peer, dst: socket.socket, n: int, pipe: tuple[int, int] | None) -> None:
        """Forwards exactly n bytes: read-ahead first, then splice(2) (or recv/send)."""
        k = min(n, src.avail)
        if k:
            dst.sendall(memoryview(src.buf)[src.pos:src.pos + k])
            src.pos += k
            n -= k
        while n > 0 and pipe and CountingProxy.splice_ok:
            try:
                moved = os.splice(src.fd, pipe[1], min(n, PIPE_SIZE), flags=os.SPLICE_F_MOVE)
            except OSError as e:
                if e.errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: no splice here
                    CountingProxy.splice_ok = False
                    break
                raise
            if moved == 0:
                raise OSError("connection closed inside a message body")
            n -= moved
            while moved:
                moved -= os.splice(pipe[0], dst.fileno(), moved, flags=os.SPLICE_F_MOVE)
        buf = bytearray(min(n, RECV_SIZE)) if n > 0 else None
        while n > 0:
            got = src.sock.recv_into(buf, min(n, len(buf)))
            if not got:
                raise OSError("connection closed inside a message body")
            dst.sendall(memoryview(buf)[:got])
            n -= got

    def _chunked(self, src: _Peer, dst: socket.socket, pipe: tuple[int, int] | None) -> int:
        """Forwards a chunked body as it is, finding its end from the chunk sizes.

        Whole read-ahead buffers are sent at once after skipping over the
        chunks they contain; the rest of a chunk longer than the buffer is
        spliced.
        """
        need = 0  # bytes of the current chunk (data + CRLF) not yet forwarded
        total = 0
        while True:
            buf, start, end = src.buf, src.pos, len(src.buf)
            p, done = start, False
            while p < end:
                if need:
                    k = min(need, end - p)
                    p += k
                    need -= k
                    continue
                eol = buf.find(b"\r\n", p, end)
                if eol < 0:
                    break
                size = int(buf[p:eol].split(b";", 1)[0].strip(), 16)  # ValueError if malformed
                if size == 0:
                    fin = buf.find(b"\r\n\r\n", eol, end)
                    if fin < 0:
                        break
                    p, done = fin + 4, True
                    break
                p, need = eol + 2, size + 2
            if p > start:
                dst.sendall(memoryview(buf)[start:p])
                total += p - start
                src.pos = p
            if done:
                return total
            if need > RECV_SIZE and not src.avail:
                self._exact(src, dst, need, pipe)
                total += need
                need = 0
                continue
            if not src.fill():
                raise OSError("connection closed inside a chunked body")

