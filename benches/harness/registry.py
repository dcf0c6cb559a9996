"""docker-registry instances on loopback, each behind a counting proxy.

Debian's `docker-registry` (CNCF distribution) on 127.0.0.1, plain HTTP,
filesystem storage in the work dir, error-level logging and no access log.
Registries are started by the harness and stopped when it exits (when
`setpriv` is installed they also get SIGTERM should the harness die).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import MIB, BenchError, log
from harness.disk import dir_bytes
from harness.budget import inflight_stats
from harness.proxy import RECV_SIZE, CountingProxy

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A docker-registry process on 127.0.0.1 with its own storage directory."""

    def __init__(self, binary: str, root: Path):
        self.root = root
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        self.proc: subprocess.Popen | None = None
        self.log_path = root / "registry.log"
        for attempt in range(3):
            self.port = free_port()
            config = root / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n"
            )
            cmd = [binary, "serve", str(config)]
            setpriv = shutil.which("setpriv")
            if setpriv:  # SIGTERM to the registry should the harness die
                cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
            if self._wait_ready():
                return
            self.stop()
        raise BenchError(f"{binary} did not start; see {self.log_path}:\n{self.log_path.read_text(errors='replace')[-2000:]}")

    def _wait_ready(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v2/")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def blob_bytes(self) -> int:
        """Bytes of all blobs stored (layers, configs, manifests)."""
        blobs = self.storage / "docker" / "registry" / "v2" / "blobs"
        return dir_bytes(blobs) if blobs.exists() else 0

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclasses.dataclass
class Endpoint:
    """A registry and the counting proxy in front of it."""

    registry: Registry
    proxy: CountingProxy
    owns_registry: bool = True

    @property
    def addr(self) -> str:
        return self.proxy.addr

    @property
    def direct_port(self) -> int:
        return self.registry.port

    def close(self, remove: bool = True) -> None:
        self.proxy.close()
        if self.proxy.errors:
            log(f"  proxy {self.proxy.label}: {len(self.proxy.errors)} connection errors, first: {self.proxy.errors[0]}")
        if not self.owns_registry:
            return
        self.registry.stop()
        if remove:
            shutil.rmtree(self.registry.root, ignore_errors=True)


class Registries:
    """Starts, tracks and stops the registries (and proxies) of one harness run.

    rtt_ms > 0 makes every proxy add the latency of a network with that
    round-trip time (harness/proxy.py, _Latency).
    """

    def __init__(self, binary: str, root: Path, rtt_ms: float = 0.0):
        self.binary = binary
        self.root = root
        self.rtt_ms = rtt_ms
        self.live: list[Endpoint] = []
        self.n = 0

    def start(self, label: str) -> Endpoint:
        self.n += 1
        reg = Registry(self.binary, self.root / f"{self.n:04d}-{label}")
        ep = Endpoint(reg, CountingProxy(reg.port, label, self.rtt_ms))
        self.live.append(ep)
        return ep

    def budget_proxy(self, ep: Endpoint, label: str, budget: tuple[int, float]) -> Endpoint:
        """Another proxy in front of ep's registry, with the run's latency
        and a request budget (see harness/proxy.py); stop() closes the
        proxy only, the registry stays ep's."""
        out = Endpoint(ep.registry, CountingProxy(ep.registry.port, label, self.rtt_ms, budget), owns_registry=False)
        self.live.append(out)
        return out

    def stop(self, ep: Endpoint) -> None:
        ep.close()
        if ep in self.live:
            self.live.remove(ep)

    def stop_all(self) -> None:
        for ep in list(self.live):
            self.stop(ep)


def measure_proxy(ep: Endpoint, repo: str, manifest_body: bytes) -> dict[str, Any] | None:
    """Best of 5 GETs of the image's largest layer, directly and through the proxy.

    This is the proxy's own cost, so a simulated network latency is off
    while it is measured.
    """
    layers = json.loads(manifest_body).get("layers") or []
    if not layers:
        return None
    desc = max(layers, key=lambda d: d.get("size", 0))
    path = f"/v2/{repo}/blobs/{desc['digest']}"

    def get(port: int) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            t0 = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            buf = bytearray(RECV_SIZE)
            n = 0
            while got := r.readinto(buf):
                n += got
            if n != desc["size"]:
                raise BenchError(f"GET {path} through port {port}: {n} bytes, expected {desc['size']}")
            return time.perf_counter() - t0
        finally:
            conn.close()

    direct, proxied = [], []
    rtt_s, ep.proxy.rtt_s = ep.proxy.rtt_s, 0.0
    try:
        for _ in range(5):
            direct.append(get(ep.direct_port))
            proxied.append(get(ep.proxy.port))
    finally:
        ep.proxy.rtt_s = rtt_s
    ep.proxy.take()
    res = {"blob_bytes": desc["size"], "direct_s": min(direct), "proxy_s": min(proxied)}
    log(
        f"  proxy check: GET of a {desc['size'] / MIB:.1f} MiB blob takes {res['direct_s'] * 1000:.1f} ms directly,"
        f" {res['proxy_s'] * 1000:.1f} ms through the counting proxy"
    )
    return res


def merge_traffic(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The counters of several proxies' take() as one run's: sums, and the
    requests in flight of all of them together (mean over the span from the
    first request to the last response, maximum of the sum), from their
    in-flight events, which are not kept."""
    out: dict[str, Any] = {"requests": 0, "by_method": {}, "connections": 0, "tls_refused": 0,
                           "bytes_to_registry": 0, "bytes_from_registry": 0, "refused_429": 0}
    events: list[tuple[float, int]] = []
    for t in parts:
        for k, v in t.items():
            if k == "by_method":
                for m, c in v.items():
                    out["by_method"][m] = out["by_method"].get(m, 0) + c
            elif k == "inflight_events":
                events += v
            elif k in out:
                out[k] += v
    out["by_method"] = dict(sorted(out["by_method"].items()))
    out.update(inflight_stats(events))
    return out
