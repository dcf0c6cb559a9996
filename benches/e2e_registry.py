"""Registry scenarios of the e2e benchmark (run them with `benches/e2e.py --scenarios registry`).

  d  docker-archive -> registry, layers gzip-compressed on the way
  d2 docker-archive -> registry, layers zstd-compressed on the way
  e  registry       -> registry (big image)
  f  registry       -> oci
  g  oci (gzip)     -> registry
  h  registry       -> docker-archive
  i  registry       -> registry (tiny image: 25 layers, request-bound)

Registries (see harness/registry.py and harness/proxy.py)
  source       one registry per image, filled once (untimed, with skopeo
               or imgsync) from the gzip OCI layout, so it holds exactly
               the layout's manifest, config and gzip layers.
  destination  a new, empty registry on a new port for every run (warm-up
               and timed, every tool): nothing is skipped or mounted as
               already present, and nothing a tool remembers about an
               earlier destination (skopeo's blob-info cache) applies.
  skopeo gets --src-tls-verify=false / --dest-tls-verify=false; imgsync
  uses plain HTTP for loopback registries by itself.  Both tools first try
  HTTPS on each registry and fall back to HTTP.  imgsync also gets --json,
  whose own `requests` count is recorded and cross-checked against the
  proxies'.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from harness import MIB, BenchError, log
from harness.copy_runs import Case
from harness.disk import dir_bytes, remove_path
from harness.images import DEST_OCI_TAG, IMAGES, OCI_SRC_TAG
from harness.process import check_output
from harness.registry import Endpoint, Registries, measure_proxy, merge_traffic
from harness.registry_api import RegistryClient
from harness.verify import verify_docker_archive, verify_oci, verify_registry

SCENARIOS = {
    "d": "docker-archive -> registry (gzip)",
    "d2": "docker-archive -> registry (zstd)",
    "e": "registry -> registry",
    "f": "registry -> oci",
    "g": "oci (gzip) -> registry",
    "h": "registry -> docker-archive",
    "i": "registry -> registry (tiny layers)",
}
# Scenarios that run on some images only (all others run on every image):
# e and i are the same copy, e for the big image and i for the tiny one.
SCENARIO_IMAGES = {"e": ["big"], "i": ["tiny"]}


@dataclasses.dataclass
class SourceImage:
    endpoint: Endpoint
    repo: str
    tag: str
    digest: str  # manifest digest the source registry serves


def split_tag(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    return repo, tag


def oci_manifest_digest(layout: Path, tag: str) -> str | None:
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError):
        return None
    return next(
        (d.get("digest") for d in index.get("manifests", [])
         if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag), None)


class RegistryScenarios:
    """The registries of the registry scenarios: source registries filled on first use, fresh destinations."""

    def __init__(self, registries: Registries, filler: tuple[str, str]):
        self.registries = registries
        self.filler = filler  # (tool, binary) that fills the source registries
        self.sources: dict[str, SourceImage] = {}
        self.proxy_check: dict[str, Any] | None = None

    def source(self, image: str, inputs: Path, meta: dict) -> SourceImage:
        """The source registry of an image, started and filled on first use."""
        if image in self.sources:
            return self.sources[image]
        ep = self.registries.start(f"src-{image}")
        repo, tag = split_tag(IMAGES[image])
        layout = inputs / meta["oci_layout"]
        tool, exe = self.filler
        dst = f"127.0.0.1:{ep.direct_port}/{repo}:{tag}"
        if tool == "skopeo":
            cmd = [exe, "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:{OCI_SRC_TAG}", f"docker://{dst}"]
        else:
            cmd = [exe, "copy", "-q", f"oci:{layout}:{OCI_SRC_TAG}", dst]
        log(f"filling source registry for {image} ({IMAGES[image]}) with {tool} ...")
        t0 = time.perf_counter()
        check_output(cmd)
        with RegistryClient(ep.direct_port) as client:
            digest, body, _ = client.manifest(repo, tag)
        layout_digest = oci_manifest_digest(layout, OCI_SRC_TAG)
        if digest != layout_digest:
            log(f"  note: the source registry serves manifest {digest}, the layout has {layout_digest}")
        log(f"  done in {time.perf_counter() - t0:.1f}s ({ep.registry.blob_bytes() / MIB:.1f} MiB, manifest {digest[:19]})")
        src = SourceImage(ep, repo, tag, digest)
        self.sources[image] = src
        if self.proxy_check is None or image == "big":
            self.proxy_check = measure_proxy(ep, repo, body)
        return src


class RegistryHooks:
    """Per-run setup and measurement of a case that involves registries.

    prepare() gives every run a fresh destination (a new registry behind a
    new proxy, or a removed output path) and zeroes the source proxy's
    counters; traffic() collects what the proxies counted during the run.
    The destination of the last run stays until verify() and cleanup().
    """

    def __init__(self, registries: Registries, label: str, build_cmd, src: SourceImage | None,
                 dest_path: Path | None, verify_fn):
        self.registries = registries
        self.label = label
        self.build_cmd = build_cmd  # (src addr or None, dest addr or None) -> command
        self.src = src
        self.dest_path = dest_path  # None: the destination is a registry
        self.verify_fn = verify_fn  # (hooks) -> problems
        self.dest: Endpoint | None = None

    def _endpoints(self) -> list[Endpoint]:
        return [e for e in (self.src.endpoint if self.src else None, self.dest) if e]

    def prepare(self) -> list[str]:
        if self.dest_path is None:
            if self.dest:
                self.registries.stop(self.dest)
            self.dest = self.registries.start(self.label)
        else:
            remove_path(self.dest_path)
        for ep in self._endpoints():
            ep.proxy.take()
        return self.build_cmd(self.src.endpoint.addr if self.src else None, self.dest.addr if self.dest else None)

    def traffic(self) -> dict[str, Any]:
        return merge_traffic([ep.proxy.take() for ep in self._endpoints()])

    def output_bytes(self) -> int | None:
        if self.dest_path is not None:
            return dir_bytes(self.dest_path) if self.dest_path.exists() else None
        return self.dest.registry.blob_bytes() if self.dest else None

    def verify(self) -> list[str]:
        return self.verify_fn(self)

    def cleanup(self) -> None:
        if self.dest:
            self.registries.stop(self.dest)
            self.dest = None
        if self.dest_path is not None:
            remove_path(self.dest_path)


def make_cases(scenario: str, image: str, tools: dict[str, str], inputs: Path, outdir: Path, meta: dict,
               setup: RegistryScenarios) -> list[Case]:
    """One case per tool; the registries a run needs are made by its hooks."""
    tag = IMAGES[image]
    repo, version = split_tag(tag)
    oci_src = inputs / meta["oci_layout"]
    diff_ids = meta["diff_ids"]
    src = setup.source(image, inputs, meta) if scenario in ("e", "f", "h", "i") else None
    oci_digest = oci_manifest_digest(oci_src, OCI_SRC_TAG)
    cases = []
    for tool, exe in tools.items():
        base = outdir / f"{scenario}-{image}-{tool}"
        skopeo = tool == "skopeo"
        reg = (lambda addr: f"docker://{addr}/{repo}:{version}") if skopeo else (lambda addr: f"{addr}/{repo}:{version}")
        # imgsync's --json summary carries its own request count (cross-checked against the proxy).
        head = [exe, "copy", "-q"] + ([] if skopeo else ["--json"])
        tls = (lambda side: [f"--{side}-tls-verify=false"]) if skopeo else (lambda side: [])
        dest_path: Path | None = None
        if scenario in ("d", "d2"):
            comp = "gzip" if scenario == "d" else "zstd"
            flags = ["--dest-compress", "--dest-compress-format", comp] if skopeo else ["--dest-compress", comp]

            def build(s_addr, d_addr, flags=flags, reg=reg, head=head, tls=tls):
                return [*head, *tls("dest"), *flags, f"docker-archive:{inputs / f'{image}.tar'}", reg(d_addr)]

            def verify(h, comp=comp):
                return verify_registry(h.dest.direct_port, repo, version, diff_ids, comp, scratch=outdir)
        elif scenario in ("e", "i"):
            def build(s_addr, d_addr, reg=reg, head=head, tls=tls):
                return [*head, *tls("src"), *tls("dest"), reg(s_addr), reg(d_addr)]

            def verify(h):
                return verify_registry(h.dest.direct_port, repo, version, diff_ids, "gzip", src.digest, scratch=outdir)
        elif scenario == "g":
            def build(s_addr, d_addr, reg=reg, head=head, tls=tls):
                return [*head, *tls("dest"), f"oci:{oci_src}:{OCI_SRC_TAG}", reg(d_addr)]

            def verify(h):
                return verify_registry(h.dest.direct_port, repo, version, diff_ids, "gzip", oci_digest, scratch=outdir)
        elif scenario == "f":
            dest_path = base

            def build(s_addr, d_addr, reg=reg, head=head, tls=tls, d=base):
                return [*head, *tls("src"), reg(s_addr), f"oci:{d}:{DEST_OCI_TAG}"]

            def verify(h, d=base):
                return verify_oci(d, DEST_OCI_TAG, diff_ids, "gzip", src.digest)
        elif scenario == "h":
            dest_path = base.with_suffix(".tar")

            def build(s_addr, d_addr, reg=reg, head=head, tls=tls, d=dest_path):
                return [*head, *tls("src"), reg(s_addr), f"docker-archive:{d}:{tag}"]

            def verify(h, d=dest_path):
                return verify_docker_archive(d, tag, diff_ids)
        else:
            raise BenchError(f"unknown registry scenario {scenario}")
        hooks = RegistryHooks(setup.registries, f"{scenario}-{image}-{tool}", build, src, dest_path, verify)
        # The command shown before the first run uses placeholders for the ephemeral proxy ports.
        cmd = build("127.0.0.1:SRCPORT", "127.0.0.1:DSTPORT")
        cases.append(Case(scenario, image, tool, cmd, dest_path or base, hooks.verify, hooks=hooks))
    return cases

