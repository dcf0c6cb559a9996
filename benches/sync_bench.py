#!/usr/bin/env python3
"""Registry mirroring benchmark: `imgsync sync` vs. `skopeo sync`.

The harness starts Debian `docker-registry` instances on loopback (each
behind the counting HTTP proxy of benches/e2e.py, which both tools talk to),
seeds a source registry and mirrors it with both tools.  Registries, the
proxy, image layers and the RSS-measuring launcher come from e2e.py.

Source
  --repos (20) repositories x --tags (3) tags, `bench/svc-NN:1.K`, every tag
  a distinct image: 3 shared base layers of ~--base-kib KiB of real files
  from /usr, plus one small top layer of its own.  Each image is written as
  a legacy `docker save` archive and pushed once (untimed) with
  `imgsync copy`, which gzip-compresses the layers on the way in; the base
  layers compress to the same blobs every time, so the source holds 3 base
  layers, 60 top layers, 60 configs and 60 manifests (checked).

Tools (a fresh, empty target registry per tool)
  imgsync  `imgsync sync --config F --json -q`, F has one catalog entry:
             source: SRC/bench/   target: DST/mirror/
  skopeo   `skopeo sync --src yaml --dest docker --dest-tls-verify=false
           --preserve-digests F DST/mirror`, F lists every repository of the
           source with an empty tag list (= every tag) and `tls-verify: false`.
           skopeo cannot read a registry catalog, so its list is written
           from the catalog by the harness; without --scoped skopeo names
           the target DST/mirror/<last path element>:<tag>, which is the
           same DST/mirror/svc-NN:1.K that imgsync writes.

Phases, per --runs repetition (default 1: cold and moved change state)
  cold    both targets empty: every image is copied.
  noop    nothing changed; repeated --noop-runs times (default 3).
  moved   one source tag (bench/svc-07:1.1) is moved to a new image (pushed
          untimed with `imgsync copy`) and both tools run again.
  Before every repetition after the first, the moved tag is put back (its
  old manifest is PUT again through the registry API) and both targets are
  replaced by new empty registries.  Tool order alternates between runs.
  After every run the target is checked against the source straight through
  the registry API (not through the proxy): the target catalog holds exactly
  mirror/svc-NN for every source repository, every repository the same tags,
  every tag the source's manifest digest.  After cold and moved one image
  (svc-00:1.0, and the moved tag) is also fully verified: config, layer
  digests and sizes, and DiffIDs after decompression.  imgsync's own JSON
  report is checked too (copied / up_to_date / failed counts, and its
  request count against the proxies').

Scale (imgsync only; --no-scale skips it)
  --scale-repos (10) repositories x --scale-tags (100) tags = 1,000 tags
  pointing at --scale-images (4) distinct images per repository, in a
  registry of their own.  Seeding: `imgsync copy` of 4 source images into
  scale/r00, then for every other repository cross-repository blob mounts
  and a manifest PUT per tag through the registry API (fast).  One cold
  `imgsync sync` fills a fresh target, then --noop-runs no-op runs are
  timed; reported are seconds, requests, and both per tag.

Measurements (as in e2e.py)
  wall      perf_counter() around the process lifetime (best of the runs;
            medians in JSON).
  cpu       user + system time of exactly the measured process (wait4).
  RSS       peak ru_maxrss of the measured process (child-subreaper
            launcher, see e2e.py; the launcher floor is printed).
  requests  HTTP requests the proxies forwarded (source and target
            together), without the refused HTTPS probes both tools make
            first (`tls_refused` in JSON).
  MiB src   bytes the source proxy sent to the tool (manifests, configs,
            layers, listings).
  MiB dst   bytes the tool sent to the target proxy (uploads, manifests).
  ratio     skopeo / imgsync, for wall time and for requests (> 1 means
            imgsync is faster or makes fewer requests).

Usage (from the project root):
    benches/sync_bench.py                     # 20x3 images, 1 run, no-op best of 3, 1,000-tag scale run
    benches/sync_bench.py --runs 3 --noop-runs 5 --json sync.json
    benches/sync_bench.py --no-scale --repos 5 --tags 2
    benches/sync_bench.py --no-scale --imgsync-jobs 1   # imgsync one image at a time, like skopeo
    benches/sync_bench.py --imgsync target/debug/imgsync --no-build --keep

The imgsync binary defaults to target/release/imgsync under the project root
and is built with `cargo build --release` when missing (--no-build never
builds).  Exit status is non-zero when a command fails or a check fails.

Not equalised between the tools: imgsync runs --jobs images at once
(default: 2 per core, 4 to 16), skopeo sync copies one image at a time;
--imgsync-jobs 1 makes imgsync copy one image at a time too.
skopeo keeps a blob-info cache across runs
(/var/lib/containers/cache/blob-info-cache-v1.boltdb for root); every
target registry is new and on a new port, so nothing it remembers about an
earlier target applies.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.dont_write_bytecode = True  # leave benches/ as it is
import e2e  # noqa: E402  (the shared registry, proxy, layer and process-measurement code)
from e2e import MIB, BenchError, CommandFailed, log, shell_join  # noqa: E402

PROJECT_ROOT = BENCH_DIR.parent
SRC_PREFIX = "bench"
DST_PREFIX = "mirror"
SCALE_PREFIX = "scale"
TOOLS = ("imgsync", "skopeo")
PHASES = {
    "cold": "cold sync (empty target)",
    "noop": "no-op re-run",
    "moved": "re-run, one tag moved",
}

# Shared base layers: (description, source roots (globs)).
BASE_LAYERS = [
    ("base: shared libraries", ["/usr/lib/*-linux-gnu"]),
    ("base: executables", ["/usr/bin", "/usr/sbin"]),
    ("base: shared data", ["/usr/share"]),
]


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def build_base_layers(build_dir: Path, kib: int) -> list[e2e.BuiltLayer]:
    used: set[str] = set()
    layers = []
    for i, (desc, patterns) in enumerate(BASE_LAYERS):
        budget = kib * 1024
        roots = e2e.expand_roots(patterns)
        lb = e2e.LayerBuilder(build_dir / f"base{i}.tar")
        e2e.fill_layer_from_host(lb, roots, budget, used)
        if budget - lb.size > budget // 2:
            e2e.fill_layer_from_host(lb, e2e.FALLBACK_ROOTS, budget, used)
        diff_id, size = lb.close()
        layers.append(e2e.BuiltLayer(lb.path, diff_id, size, lb.files,
                                     f"/bin/sh -c #(nop) COPY dir:{' '.join(roots)} in / # {desc}"))
        log(f"  base layer {i}: {size / MIB:.2f} MiB, {lb.files} entries ({desc})")
    return layers


def build_top_layer(build_dir: Path, name: str) -> e2e.BuiltLayer:
    """A small layer of its own for every image: a few KiB of text derived from the name."""
    path = build_dir / f"top-{name.replace('/', '_').replace(':', '_')}.tar"
    lb = e2e.LayerBuilder(path)
    lb.ensure_parents("srv/app/x", host_root=None)
    lb.add_bytes("srv/app/IMAGE", f"{name}\n".encode())
    h = hashlib.sha256(name.encode()).hexdigest()
    lines = []
    for k in range(64):
        h = hashlib.sha256(h.encode()).hexdigest()
        lines.append(f"setting_{k:02d} = {h}\n")
    lb.add_bytes("srv/app/app.conf", "".join(lines).encode())
    lb.ensure_parents("etc/app/x", host_root=None)
    lb.add_bytes("etc/app/release", f"release={name}\n".encode())
    diff_id, size = lb.close()
    return e2e.BuiltLayer(path, diff_id, size, lb.files, f"/bin/sh -c #(nop) COPY app /srv/app # {name}")


def push_archive(imgsync: str, build_dir: Path, base: list[e2e.BuiltLayer], name: str, dest: str) -> list[str]:
    """Builds `name` (base layers + its own top layer), pushes it to dest; returns its DiffIDs."""
    top = build_top_layer(build_dir, name)
    archive = top.path.with_suffix(".docker.tar")
    meta = e2e.write_docker_archive(archive, name, base + [top])
    try:
        e2e.check_output([imgsync, "copy", "-q", f"docker-archive:{archive}", dest])
    finally:
        archive.unlink(missing_ok=True)
        top.path.unlink(missing_ok=True)
    return meta["diff_ids"]


# --------------------------------------------------------------------------
# Direct registry access (bypasses the counting proxy)
# --------------------------------------------------------------------------


class Direct:
    """A keep-alive HTTP client talking straight to one registry."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def paged(self, path: str, key: str) -> list[str]:
        out: list[str] = []
        next_path: str | None = path
        while next_path:
            status, headers, body = self.request("GET", next_path)
            if status == 404 and key == "tags":
                return out
            if status != 200:
                raise BenchError(f"GET {next_path} on 127.0.0.1:{self.port} answered {status}")
            out += json.loads(body).get(key) or []
            link = headers.get("link")
            next_path = link.split(";", 1)[0].strip().strip("<>") if link else None
        return out

    def catalog(self) -> list[str]:
        return sorted(self.paged("/v2/_catalog?n=1000", "repositories"))

    def tags(self, repo: str) -> list[str]:
        return sorted(self.paged(f"/v2/{repo}/tags/list", "tags"))

    def manifest(self, repo: str, ref: str) -> tuple[str, bytes, str]:
        """(digest, bytes, media type) of a manifest."""
        status, headers, body = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                                             headers={"Accept": e2e.MANIFEST_ACCEPT})
        if status != 200:
            raise BenchError(f"GET /v2/{repo}/manifests/{ref} on 127.0.0.1:{self.port} answered {status}")
        media_type = headers.get("content-type") or json.loads(body).get("mediaType", "")
        return "sha256:" + hashlib.sha256(body).hexdigest(), body, media_type

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> None:
        status, _, resp = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body,
                                       headers={"Content-Type": media_type})
        if status != 201:
            raise BenchError(f"PUT /v2/{repo}/manifests/{ref} answered {status}: {resp[:300]!r}")

    def mount(self, repo: str, digest: str, source_repo: str) -> None:
        status, _, resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source_repo}",
                                       body=b"", headers={"Content-Length": "0"})
        if status != 201:
            raise BenchError(f"mount of {digest} into {repo} answered {status}: {resp[:300]!r}")

    def snapshot(self, prefix: str) -> dict[str, dict[str, str]]:
        """repository -> tag -> manifest digest, for every repository below prefix/."""
        out: dict[str, dict[str, str]] = {}
        for repo in self.catalog():
            if repo.startswith(prefix + "/"):
                out[repo] = {tag: self.manifest(repo, tag)[0] for tag in self.tags(repo)}
        return out

    def close(self) -> None:
        if self.conn:
            self.conn.close()
            self.conn = None


def compare_mirror(source: dict[str, dict[str, str]], target_port: int, src_prefix: str) -> list[str]:
    """Problems of a target registry that should mirror `source` below mirror/."""
    problems: list[str] = []
    d = Direct(target_port)
    try:
        want = {f"{DST_PREFIX}/{r[len(src_prefix) + 1:]}": tags for r, tags in source.items()}
        have = d.catalog()
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        if missing:
            problems.append(f"error: {len(missing)} repositories missing at the target, first {missing[0]}")
        if extra:
            problems.append(f"error: {len(extra)} unexpected repositories at the target, first {extra[0]}")
        wrong, absent, surplus, checked = [], [], [], 0
        for repo, tags in want.items():
            if repo in missing:
                continue
            have_tags = set(d.tags(repo))
            absent += [f"{repo}:{t}" for t in tags if t not in have_tags]
            surplus += [f"{repo}:{t}" for t in sorted(have_tags - set(tags))]
            for tag, digest in tags.items():
                if tag in have_tags:
                    checked += 1
                    got = d.manifest(repo, tag)[0]
                    if got != digest:
                        wrong.append(f"{repo}:{tag} is {got[:19]}, source {digest[:19]}")
        if absent:
            problems.append(f"error: {len(absent)} tags missing at the target, first {absent[0]}")
        if surplus:
            problems.append(f"error: {len(surplus)} unexpected tags at the target, first {surplus[0]}")
        if wrong:
            problems.append(f"error: {len(wrong)} of {checked} tags have another manifest digest than the source, first {wrong[0]}")
    except (BenchError, OSError, ValueError, http.client.HTTPException) as e:
        problems.append(f"error: reading the target failed: {e}")
    finally:
        d.close()
    return problems


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    phase: str
    tool: str
    run: int
    cmd: list[str]
    sample: e2e.Sample
    traffic: dict[str, Any]
    report: dict[str, Any] | None = None  # imgsync --json summary (without per-image entries)
    images_copied: int | None = None
    images_up_to_date: int | None = None
    problems: list[str] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sample"].pop("traffic", None)
        return d


class Bench:
    def __init__(self, args: argparse.Namespace, imgsync: str, skopeo: str, registry_bin: str, workdir: Path):
        self.args = args
        self.imgsync = imgsync
        self.skopeo = skopeo
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.runner = e2e.Runner(args.rss_method, workdir)
        self.registries = e2e.Registries(registry_bin, workdir / "registries", ("imgsync", imgsync))
        self.results: list[RunResult] = []
        self.scale: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.src: e2e.Endpoint | None = None
        self.diff_ids: dict[str, list[str]] = {}  # "repo:tag" -> DiffIDs
        self.source_state: dict[str, dict[str, str]] = {}
        self.moved: dict[str, Any] = {}
        self.targets: dict[str, e2e.Endpoint] = {}
        self.order_flip = False
        self.failed = False
        self._last: dict[str, dict[str, Any]] = {}

    # -- setup ----------------------------------------------------------

    def measure_floor(self) -> None:
        floor = [self.runner.run(["/bin/true"])[0] for _ in range(5)]
        self.meta["rss_method"] = self.runner.method
        self.meta["launcher_floor"] = {
            "wall_s": min(s.wall_s for s in floor),
            "maxrss_kib": max(s.maxrss_kib for s in floor),
        }

    def seed_source(self) -> None:
        a = self.args
        self.src = self.start("src")
        build = self.workdir / "build"
        build.mkdir()
        log(f"building base layers (~{a.base_kib} KiB each) ...")
        base = build_base_layers(build, a.base_kib)
        self.meta["base_layer_bytes"] = [l.size for l in base]
        names = [(f"{SRC_PREFIX}/svc-{r:02d}", f"1.{t}") for r in range(a.repos) for t in range(a.tags)]
        direct = f"127.0.0.1:{self.src.direct_port}"
        log(f"pushing {len(names)} images to the source registry with imgsync copy ...")
        t0 = time.perf_counter()

        def push_repo(repo: str) -> list[tuple[str, list[str]]]:
            out = []
            for r, t in names:
                if r == repo:
                    ref = f"{r}:{t}"
                    out.append((ref, push_archive(self.imgsync, build, base, ref, f"{direct}/{ref}")))
            return out

        # Repositories in parallel, the tags of one repository one after the
        # other: docker-registry 2.8 (filesystem storage) can answer a
        # manifest PUT with DIGEST_INVALID while another upload of the same
        # blob into the same repository rewrites its link file.
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for pushed in pool.map(push_repo, sorted({r for r, _ in names})):
                self.diff_ids.update(pushed)
        # The image the moved tag gets later, in an archive kept for the moves.
        self.moved_repo = f"{SRC_PREFIX}/svc-{min(7, a.repos - 1):02d}"
        self.moved_tag = f"1.{min(1, a.tags - 1)}"
        moved_name = f"{self.moved_repo}:{self.moved_tag}"
        top = build_top_layer(build, moved_name + "-moved")
        self.moved_archive = build / "moved.docker.tar"
        meta = e2e.write_docker_archive(self.moved_archive, moved_name, base + [top])
        self.moved_diff_ids = meta["diff_ids"]
        for l in base:
            l.path.unlink()
        top.path.unlink()
        d = Direct(self.src.direct_port)
        try:
            self.source_state = d.snapshot(SRC_PREFIX)
            blobs: set[str] = set()
            layers: set[str] = set()
            for repo, tags in self.source_state.items():
                for tag in tags:
                    m = json.loads(d.manifest(repo, tag)[1])
                    blobs.add(m["config"]["digest"])
                    layers.update(l["digest"] for l in m["layers"])
            dg, body, mt = d.manifest(self.moved_repo, self.moved_tag)
            self.original = {"digest": dg, "body": body, "media_type": mt}
            self.sample_manifest = d.manifest(f"{SRC_PREFIX}/svc-00", "1.0")
        finally:
            d.close()
        n_tags = sum(len(t) for t in self.source_state.values())
        log(
            f"  {len(self.source_state)} repositories, {n_tags} tags, {len(layers)} distinct layers,"
            f" {len(blobs)} configs, {self.src.registry.blob_bytes() / MIB:.1f} MiB stored,"
            f" in {time.perf_counter() - t0:.1f}s"
        )
        if n_tags != len(names):
            raise BenchError(f"the source holds {n_tags} tags, expected {len(names)}")
        expect_layers = len(base) + len(names)
        if len(layers) != expect_layers:
            log(f"  warning: {len(layers)} distinct layers in the source, expected {expect_layers}"
                " (base layers not shared: their gzip bytes differ between pushes)")
        self.meta["source"] = {
            "repositories": len(self.source_state), "tags": n_tags, "distinct_layers": len(layers),
            "configs": len(blobs), "stored_bytes": self.src.registry.blob_bytes(),
            "moved_tag": f"{self.moved_repo}:{self.moved_tag}",
        }
        # The proxy's own cost, for the header.
        digest, body, _ = self.sample_manifest
        self.meta["proxy_check"] = self.registries.measure_proxy(
            e2e.SourceImage(self.src, f"{SRC_PREFIX}/svc-00", "1.0", digest), body)

    # -- the moved tag ----------------------------------------------------

    def move_tag(self) -> None:
        """Points the moved tag at the other image (untimed)."""
        if not self.moved:
            dest = f"127.0.0.1:{self.src.direct_port}/{self.moved_repo}:{self.moved_tag}"
            e2e.check_output([self.imgsync, "copy", "-q", f"docker-archive:{self.moved_archive}", dest])
            d = Direct(self.src.direct_port)
            try:
                dg, body, mt = d.manifest(self.moved_repo, self.moved_tag)
            finally:
                d.close()
            if dg == self.original["digest"]:
                raise BenchError("moving the tag did not change its manifest digest")
            self.moved = {"digest": dg, "body": body, "media_type": mt}
        else:
            self.put_source_tag(self.moved)
        self.source_state[self.moved_repo][self.moved_tag] = self.moved["digest"]
        self.diff_ids[f"{self.moved_repo}:{self.moved_tag}"] = self.moved_diff_ids

    def restore_tag(self) -> None:
        self.put_source_tag(self.original)
        self.source_state[self.moved_repo][self.moved_tag] = self.original["digest"]

    def put_source_tag(self, m: dict[str, Any]) -> None:
        d = Direct(self.src.direct_port)
        try:
            d.put_manifest(self.moved_repo, self.moved_tag, m["body"], m["media_type"])
            if d.manifest(self.moved_repo, self.moved_tag)[0] != m["digest"]:
                raise BenchError("the source tag does not have the digest just PUT")
        finally:
            d.close()

    # -- commands ---------------------------------------------------------

    def imgsync_cmd(self, name: str, src: e2e.Endpoint, prefix: str, dst: e2e.Endpoint) -> list[str]:
        cfg = self.workdir / f"{name}.yaml"
        cfg.write_text(
            "version: 1\n"
            "sync:\n"
            f"  - source: {src.addr}/{prefix}/\n"
            f"    target: {dst.addr}/{DST_PREFIX}/\n"
        )
        jobs = ["--jobs", str(self.args.imgsync_jobs)] if self.args.imgsync_jobs else []
        return [self.imgsync, "sync", "--config", str(cfg), "--json", "-q", *jobs]

    def skopeo_cmd(self, name: str, dst: e2e.Endpoint) -> list[str]:
        cfg = self.workdir / f"{name}.yaml"
        lines = [f"{self.src.addr}:", "  tls-verify: false", "  images:"]
        lines += [f"    {repo}: []" for repo in sorted(self.source_state)]
        cfg.write_text("\n".join(lines) + "\n")
        return [self.skopeo, "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                "--preserve-digests", str(cfg), f"{dst.addr}/{DST_PREFIX}"]

    def measure(self, phase: str, tool: str, run: int, cmd: list[str], endpoints: list[e2e.Endpoint]) -> RunResult:
        for ep in endpoints:
            ep.proxy.take()
        os.sync()
        sample, stderr = self.runner.run(cmd)
        traffic = e2e.merge_traffic([ep.proxy.take() for ep in endpoints])
        sample.requests = traffic["requests"]
        stem = self.logs / f"{phase}-{tool}-{run}-{len(self.results)}"
        stdout_path = self.workdir / "stdout.log"
        shutil.copyfile(stdout_path, stem.with_suffix(".out"))
        stem.with_suffix(".err").write_text(stderr)
        if sample.rc != 0:
            print(f"\nFAILED ({tool}, {phase}): {shell_join(cmd)}\nexit status {sample.rc}; stderr:\n"
                  f"{stderr.rstrip()[-4000:] or '(empty)'}\n", file=sys.stderr)
            raise CommandFailed(cmd, sample.rc, stderr)
        res = RunResult(phase, tool, run, cmd, sample, traffic)
        # Per proxy: what the source sent and what the target received.
        src_proxy, dst_proxy = endpoints[0].proxy, endpoints[-1].proxy
        res.traffic["source_bytes_out"] = self._last[src_proxy.label]["bytes_from_registry"]
        res.traffic["target_bytes_in"] = self._last[dst_proxy.label]["bytes_to_registry"]
        if tool == "imgsync":
            try:
                report = json.loads(stdout_path.read_text())
            except ValueError as e:
                raise BenchError(f"imgsync sync --json printed no JSON report: {e}") from None
            sample.self_reported_requests = report.get("requests")
            res.report = {k: v for k, v in report.items() if k != "images"}
            res.report["failed_images"] = [i for i in report.get("images", []) if i.get("action") == "failed"]
            res.images_copied = report.get("copied")
            res.images_up_to_date = report.get("up_to_date")
            seen = traffic["requests"] + traffic["tls_refused"]
            if report.get("requests") != seen:
                res.problems.append(
                    f"warning: imgsync reports {report.get('requests')} requests, the proxies saw"
                    f" {traffic['requests']} HTTP requests and {traffic['tls_refused']} HTTPS probes")
        else:
            # skopeo sync logs "Copying image ref i/n" (stderr) for every image
            # it looks at, and prints "Skipping: image already present at
            # destination" (stdout) for the ones whose target manifest is the same.
            refs = stderr.count("Copying image ref ")
            skipped = stdout_path.read_text(errors="replace").count("Skipping: image already present at destination")
            res.images_copied = refs - skipped
            res.images_up_to_date = skipped
        self.results.append(res)
        log(f"  {phase:5s} {tool:8s} run {run + 1}: {sample.wall_s:7.3f} s  cpu {sample.user_s + sample.sys_s:6.3f} s"
            f"  {sample.maxrss_kib / 1024:6.1f} MiB  {traffic['requests']:5d} requests"
            + f"  ({res.images_copied} copied, {res.images_up_to_date} up to date)")
        return res

    # e2e.CountingProxy.take() resets its counters and merge_traffic() loses
    # the per-proxy split, so take() is wrapped to keep each proxy's last
    # counters in self._last (by proxy label) for measure().
    def wrap_proxy(self, ep: e2e.Endpoint) -> e2e.Endpoint:
        proxy = ep.proxy
        original = proxy.take

        def take() -> dict[str, Any]:
            t = original()
            self._last[proxy.label] = t
            return t

        proxy.take = take
        return ep

    def start(self, label: str) -> e2e.Endpoint:
        return self.wrap_proxy(self.registries.start(label))

    # -- checks -----------------------------------------------------------

    def check(self, res: RunResult, target: e2e.Endpoint, expect_copied: int | None, full: list[str]) -> None:
        n_tags = sum(len(t) for t in self.source_state.values())
        res.problems += compare_mirror(self.source_state, target.direct_port, SRC_PREFIX)
        if res.tool == "imgsync" and res.report is not None:
            r = res.report
            want = {"copied": expect_copied, "up_to_date": n_tags - expect_copied, "failed": 0}
            got = {k: r.get(k) for k in want}
            if got != want:
                res.problems.append(f"error: imgsync report says {got}, expected {want}")
        elif res.tool == "skopeo" and (res.images_copied, res.images_up_to_date) != (expect_copied, n_tags - expect_copied):
            res.problems.append(f"note: skopeo copied {res.images_copied} and skipped {res.images_up_to_date} images,"
                                f" expected {expect_copied} and {n_tags - expect_copied}")
        for ref in full:
            repo, _, tag = ref.rpartition(":")
            digest = self.source_state[repo][tag]
            dst_repo = f"{DST_PREFIX}/{repo[len(SRC_PREFIX) + 1:]}"
            problems = e2e.verify_registry(target.direct_port, dst_repo, tag, self.diff_ids[ref], "gzip",
                                           expect_manifest=digest, scratch=self.workdir)
            res.problems += [f"{p} ({dst_repo}:{tag})" for p in problems]
        for p in res.problems:
            log(f"    {res.tool}: {p}")
        if any(p.startswith("error") for p in res.problems):
            self.failed = True

    # -- the scenario -----------------------------------------------------

    def tool_order(self) -> list[str]:
        self.order_flip = not self.order_flip
        return list(TOOLS) if self.order_flip else list(reversed(TOOLS))

    def run_tool(self, phase: str, tool: str, run: int) -> RunResult:
        dst = self.targets[tool]
        if tool == "imgsync":
            cmd = self.imgsync_cmd(f"imgsync-{dst.proxy.port}", self.src, SRC_PREFIX, dst)
        else:
            cmd = self.skopeo_cmd(f"skopeo-{dst.proxy.port}", dst)
        return self.measure(phase, tool, run, cmd, [self.src, dst])

    def cycle(self, run: int) -> None:
        a = self.args
        n_tags = sum(len(t) for t in self.source_state.values())
        moved_ref = f"{self.moved_repo}:{self.moved_tag}"
        if run > 0:
            self.restore_tag()
        for tool in TOOLS:
            if tool in self.targets:
                self.registries.stop(self.targets.pop(tool))
            self.targets[tool] = self.start(f"dst-{tool}-{run}")
        log(f"run {run + 1}/{a.runs}: cold")
        for tool in self.tool_order():
            res = self.run_tool("cold", tool, run)
            self.check(res, self.targets[tool], n_tags, [f"{SRC_PREFIX}/svc-00:1.0"])
        log(f"run {run + 1}/{a.runs}: no-op x{a.noop_runs}")
        for k in range(a.noop_runs):
            for tool in self.tool_order():
                res = self.run_tool("noop", tool, run)
                self.check(res, self.targets[tool], 0, [])
        log(f"run {run + 1}/{a.runs}: moved ({moved_ref})")
        self.move_tag()
        for tool in self.tool_order():
            res = self.run_tool("moved", tool, run)
            self.check(res, self.targets[tool], 1, [moved_ref])

    # -- scale: imgsync no-op over many tags ----------------------------------

    def run_scale(self) -> None:
        a = self.args
        src = self.start("scale-src")
        dst = self.start("scale-dst")
        d = Direct(src.direct_port)
        t0 = time.perf_counter()
        first = f"{SCALE_PREFIX}/r00"
        n_images = min(a.scale_images, a.scale_tags)
        log(f"scale: seeding {a.scale_repos} repositories x {a.scale_tags} tags over {n_images} images ...")
        try:
            # A few distinct images into the first repository (registry to registry, untimed).
            for k in range(n_images):
                r, t = divmod(k, a.tags)
                e2e.check_output([
                    self.imgsync, "copy", "-q",
                    f"127.0.0.1:{self.src.direct_port}/{SRC_PREFIX}/svc-{r % a.repos:02d}:1.{t}",
                    f"127.0.0.1:{src.direct_port}/{first}:v{k:03d}",
                ])
            manifests = [d.manifest(first, f"v{k:03d}") for k in range(n_images)]
            blobs: list[str] = []
            for _, body, _ in manifests:
                m = json.loads(body)
                for desc in [m["config"], *m["layers"]]:
                    if desc["digest"] not in blobs:
                        blobs.append(desc["digest"])
            for r in range(a.scale_repos):
                repo = f"{SCALE_PREFIX}/r{r:02d}"
                if r > 0:
                    for dg in blobs:
                        d.mount(repo, dg, first)
                for t in range(a.scale_tags):
                    _, body, mt = manifests[t % n_images]
                    d.put_manifest(repo, f"v{t:03d}", body, mt)
            state = d.snapshot(SCALE_PREFIX)
        finally:
            d.close()
        n_tags = sum(len(t) for t in state.values())
        log(f"  {len(state)} repositories, {n_tags} tags in {time.perf_counter() - t0:.1f}s")
        if n_tags != a.scale_repos * a.scale_tags:
            raise BenchError(f"the scale source holds {n_tags} tags, expected {a.scale_repos * a.scale_tags}")
        cmd = self.imgsync_cmd("imgsync-scale", src, SCALE_PREFIX, dst)
        runs: list[RunResult] = []

        def one(phase: str, expect_copied: int | None) -> RunResult:
            res = self.measure(phase, "imgsync", 0, cmd, [src, dst])
            res.problems += compare_mirror(state, dst.direct_port, SCALE_PREFIX)
            r = res.report or {}
            got = {k: r.get(k) for k in ("copied", "up_to_date", "failed")}
            if expect_copied is None:
                # Cold: a tag whose manifest another tag of the repository
                # already brought has nothing to upload; it may count as
                # copied or as up to date.
                ok = got["failed"] == 0 and (got["copied"] or 0) + (got["up_to_date"] or 0) == n_tags
                want: Any = f"copied + up_to_date = {n_tags}, failed 0"
            else:
                want = {"copied": expect_copied, "up_to_date": n_tags - expect_copied, "failed": 0}
                ok = got == want
            if not ok:
                res.problems.append(f"error: imgsync report says {got}, expected {want}")
            for p in res.problems:
                log(f"    imgsync: {p}")
            if any(p.startswith("error") for p in res.problems):
                self.failed = True
            return res

        log("scale: cold (fills the target)")
        cold = one("scale-cold", None)
        log(f"scale: no-op x{a.noop_runs}")
        for _ in range(a.noop_runs):
            runs.append(one("scale-noop", 0))
        # The per-tag rows are not part of the two-tool table.
        self.results = [r for r in self.results if not r.phase.startswith("scale")]
        best = min(runs, key=lambda r: r.sample.wall_s)
        reqs = [r.sample.requests for r in runs]
        self.scale = {
            "repositories": len(state), "tags": n_tags, "distinct_images_per_repo": n_images,
            "cold": cold.as_json(),
            "noop_runs": [r.as_json() for r in runs],
            "noop_best_wall_s": best.sample.wall_s,
            "noop_median_wall_s": statistics.median(r.sample.wall_s for r in runs),
            "noop_best_cpu_s": min(r.sample.user_s + r.sample.sys_s for r in runs),
            "noop_peak_rss_mib": max(r.sample.maxrss_kib for r in runs) / 1024,
            "noop_requests": int(statistics.median_low(reqs)),
            "noop_requests_min": min(reqs), "noop_requests_max": max(reqs),
            "noop_requests_by_method": best.traffic["by_method"],
            "noop_tls_refused": best.traffic["tls_refused"],
            "noop_requests_per_tag": statistics.median_low(reqs) / n_tags,
            "noop_ms_per_tag": best.sample.wall_s / n_tags * 1000,
            "problems": sorted({p for r in [cold, *runs] for p in r.problems}),
        }
        self.registries.stop(src)
        self.registries.stop(dst)


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def summarize(results: list[RunResult]) -> list[dict[str, Any]]:
    rows = []
    for phase in PHASES:
        best: dict[str, dict[str, Any]] = {}
        for tool in TOOLS:
            rs = [r for r in results if r.phase == phase and r.tool == tool]
            if not rs:
                continue
            reqs = [r.sample.requests for r in rs]
            row = {
                "phase": phase,
                "phase_name": PHASES[phase],
                "tool": tool,
                "runs": len(rs),
                "cmd": rs[-1].cmd,
                "best_wall_s": min(r.sample.wall_s for r in rs),
                "median_wall_s": statistics.median(r.sample.wall_s for r in rs),
                "best_cpu_s": min(r.sample.user_s + r.sample.sys_s for r in rs),
                "peak_rss_mib": max(r.sample.maxrss_kib for r in rs) / 1024,
                "requests": int(statistics.median_low(reqs)),
                "requests_min": min(reqs),
                "requests_max": max(reqs),
                "requests_by_method": rs[0].traffic["by_method"],
                "tls_refused": rs[0].traffic["tls_refused"],
                "source_mib": statistics.median(r.traffic["source_bytes_out"] for r in rs) / MIB,
                "target_mib": statistics.median(r.traffic["target_bytes_in"] for r in rs) / MIB,
                "images_copied": rs[0].images_copied,
                "images_up_to_date": rs[0].images_up_to_date,
                "imgsync_reported": rs[0].report,
                "problems": sorted({p for r in rs for p in r.problems}),
                "wall_ratio_skopeo_over_imgsync": None,
                "requests_ratio_skopeo_over_imgsync": None,
                "samples": [r.as_json() for r in rs],
            }
            best[tool] = row
            rows.append(row)
        if "imgsync" in best and "skopeo" in best:
            i, s = best["imgsync"], best["skopeo"]
            i["wall_ratio_skopeo_over_imgsync"] = s["best_wall_s"] / i["best_wall_s"]
            if i["requests"]:
                i["requests_ratio_skopeo_over_imgsync"] = s["requests"] / i["requests"]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["phase", "tool", "wall s", "cpu s", "RSS MiB", "requests", "probes", "MiB src", "MiB dst", "images",
            "wall sk/is", "req sk/is", "check"]
    table = [head]
    for r in rows:
        images = f"{r['images_copied']} copied, {r['images_up_to_date']} up to date"
        reqs = str(r["requests"]) if r["requests_min"] == r["requests_max"] else f"{r['requests_min']}-{r['requests_max']}"
        check = ("error" if any(p.startswith("error") for p in r["problems"])
                 else "warn" if any(p.startswith("warning") for p in r["problems"]) else "ok")
        wr, rr = r["wall_ratio_skopeo_over_imgsync"], r["requests_ratio_skopeo_over_imgsync"]
        label = f"{r['phase']}" + (f" (best of {r['runs']})" if r["runs"] > 1 else "")
        table.append([
            label, r["tool"], f"{r['best_wall_s']:.3f}", f"{r['best_cpu_s']:.3f}", f"{r['peak_rss_mib']:.1f}",
            reqs, str(r["tls_refused"]), f"{r['source_mib']:.1f}", f"{r['target_mib']:.1f}", images,
            "" if wr is None else f"{wr:.2f}x", "" if rr is None else f"{rr:.2f}x", check,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    numeric = {2, 3, 4, 5, 6, 7, 8, 10, 11}
    for n, row in enumerate(table):
        print("  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_report(bench: Bench, rows: list[dict[str, Any]]) -> None:
    m = bench.meta
    a = bench.args
    src = m.get("source", {})
    print()
    print(f"source: {src.get('repositories', '?')} repositories x {a.tags} tags = {src.get('tags', '?')} images,"
          f" {src.get('distinct_layers', '?')} distinct layers, {src.get('stored_bytes', 0) / MIB:.1f} MiB stored;"
          f" moved tag {src.get('moved_tag', '?')}")
    parts = [f"runs={a.runs} (cold, moved), no-op runs={a.noop_runs} per run"]
    if m.get("launcher_floor"):
        fl = m["launcher_floor"]
        parts.append(f"rss={m['rss_method']} (floor {fl['maxrss_kib'] / 1024:.1f} MiB, {fl['wall_s'] * 1000:.1f} ms)")
    parts.append(f"cpus={m.get('cpus')}")
    print("; ".join(parts))
    for k in ("imgsync_version", "skopeo_version", "registry_version"):
        if m.get(k):
            print(f"{k.split('_')[0]}: {m[k]}")
    pc = m.get("proxy_check")
    if pc:
        print(f"counting proxy: a {pc['blob_bytes'] / MIB:.1f} MiB blob GET takes {pc['direct_s'] * 1000:.1f} ms"
              f" directly, {pc['proxy_s'] * 1000:.1f} ms through the proxy")
    print()
    if rows:
        print_table(rows)
        print(
            "\nrequests = HTTP requests through the counting proxies (source + target); probes = refused HTTPS"
            "\n  connection attempts (not in requests); MiB src = bytes the source registry sent, MiB dst = bytes"
            "\n  sent to the target registry; sk/is = skopeo / imgsync (> 1: imgsync faster or fewer requests)."
        )
        print("\nimgsync's own report (first run of each phase):")
        for r in rows:
            rep = r["imgsync_reported"]
            if rep:
                print(f"  {r['phase']:5s} {rep['copied']} copied, {rep['up_to_date']} up to date, {rep['failed']} failed;"
                      f" blobs {rep['blobs_copied']} uploaded, {rep['blobs_mounted']} mounted, {rep['blobs_skipped']}"
                      f" skipped; {rep['bytes'] / MIB:.2f} MiB; {rep['requests']} requests; seconds {rep['seconds']:.3f}"
                      f" (wall {r['samples'][0]['sample']['wall_s']:.3f})")
        by_method = [f"  {r['phase']:5s} {r['tool']:8s} " + " ".join(f"{k} {v}" for k, v in r["requests_by_method"].items())
                     for r in rows]
        print("\nrequests by method (first run of each phase):")
        print("\n".join(by_method))
    s = bench.scale
    if s:
        print(
            f"\nimgsync no-op over {s['tags']} tags ({s['repositories']} repositories, {s['distinct_images_per_repo']}"
            f" images each; best of {len(s['noop_runs'])}): {s['noop_best_wall_s']:.3f} s"
            f" ({s['noop_ms_per_tag']:.2f} ms/tag), cpu {s['noop_best_cpu_s']:.3f} s,"
            f" {s['noop_peak_rss_mib']:.1f} MiB RSS, {s['noop_requests']} requests"
            f" ({s['noop_requests_per_tag']:.2f}/tag: "
            + " ".join(f"{k} {v}" for k, v in s["noop_requests_by_method"].items()) + ")"
        )
        c = s["cold"]
        print(f"  the cold run that filled the target: {c['sample']['wall_s']:.3f} s, {c['sample']['requests']} requests"
              f" ({c['sample']['requests'] / s['tags']:.2f}/tag: "
              + " ".join(f"{k} {v}" for k, v in c["traffic"]["by_method"].items()) + ")")
        for p in s["problems"]:
            print(f"  scale: {p}")
    notes = sorted({(r["phase"], r["tool"], p) for r in rows for p in r["problems"]})
    if notes:
        print("\ncheck notes:")
        for phase, tool, p in notes:
            print(f"  {phase}/{tool}: {p}")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--runs", type=int, default=1,
                    help="repetitions of cold / no-op / moved, each with new targets (default 1)")
    ap.add_argument("--noop-runs", type=int, default=3, help="no-op runs per repetition and tool (default 3)")
    ap.add_argument("--repos", type=int, default=20, help="source repositories (default 20)")
    ap.add_argument("--tags", type=int, default=3, help="tags per source repository (default 3)")
    ap.add_argument("--base-kib", type=int, default=1536, help="size of each of the 3 base layers in KiB (default 1536)")
    ap.add_argument("--no-scale", action="store_true", help="skip the imgsync no-op run over many tags")
    ap.add_argument("--scale-repos", type=int, default=10, help="repositories of the scale run (default 10)")
    ap.add_argument("--scale-tags", type=int, default=100, help="tags per repository of the scale run (default 100)")
    ap.add_argument("--scale-images", type=int, default=4, help="distinct images per scale repository (default 4)")
    ap.add_argument("--imgsync-jobs", type=int, metavar="N",
                    help="pass --jobs N to imgsync sync (default: imgsync's own default; 1 copies one image"
                         " at a time, as skopeo sync does)")
    ap.add_argument("--imgsync", default="target/release/imgsync",
                    help="imgsync binary, relative to the project root (default target/release/imgsync)")
    ap.add_argument("--no-build", action="store_true", help="never run cargo build")
    ap.add_argument("--skopeo", default="/usr/bin/skopeo", help="skopeo binary (default /usr/bin/skopeo)")
    ap.add_argument("--registry", default=e2e.REGISTRY_BIN, help=f"registry binary (default {e2e.REGISTRY_BIN})")
    ap.add_argument("--rss-method", choices=["auto", "reaper", "direct"], default="auto",
                    help="how processes are spawned for RSS measurement (see e2e.py)")
    ap.add_argument("--workdir", help="parent directory of the temporary work dir (default $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (registry storage, configs, logs)")
    ap.add_argument("--json", metavar="FILE", help="write results as JSON to FILE")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.noop_runs < 1 or args.repos < 1 or args.tags < 1 or args.base_kib < 16:
        ap.error("--runs, --noop-runs, --repos, --tags must be >= 1 and --base-kib >= 16")
    if args.scale_repos < 1 or args.scale_tags < 1 or args.scale_images < 1:
        ap.error("--scale-repos, --scale-tags, --scale-images must be >= 1")

    imgsync = Path(args.imgsync)
    if not imgsync.is_absolute():
        imgsync = PROJECT_ROOT / imgsync
    if not imgsync.exists() and not args.no_build:
        log("building imgsync: cargo build --release")
        rc = subprocess.run(["cargo", "build", "--release"], cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL).returncode
        if rc != 0:
            log(f"cargo build --release failed with exit status {rc}")
            return 1
    if not os.access(imgsync, os.X_OK):
        log(f"imgsync binary not found or not executable: {imgsync}")
        return 1
    skopeo = shutil.which(args.skopeo)
    if not skopeo:
        log(f"skopeo not found: {args.skopeo}")
        return 1
    registry_bin = shutil.which(args.registry)
    if not registry_bin:
        log(f"registry binary not found: {args.registry} (Debian package docker-registry)")
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="imgsync-sync-bench-", dir=args.workdir))
    bench = Bench(args, str(imgsync), skopeo, registry_bin, workdir)
    bench.meta.update({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "imgsync": str(imgsync),
        "imgsync_version": e2e.tool_version([str(imgsync), "--version"]),
        "skopeo_version": e2e.tool_version([skopeo, "--version"]),
        "registry_version": e2e.tool_version([registry_bin, "--version"]),
        "workdir": str(workdir),
        "args": vars(args),
    })
    exit_code = 0
    try:
        log(f"work dir: {workdir}")
        bench.measure_floor()
        bench.seed_source()
        for run in range(args.runs):
            bench.cycle(run)
        if not args.no_scale:
            bench.run_scale()
        if bench.failed:
            exit_code = 1
    except CommandFailed as e:
        exit_code = 1
        if "sync" not in e.cmd:  # a failed sync run was reported by measure()
            print(f"\n{e}\nstderr:\n{e.stderr.rstrip() or '(empty)'}", file=sys.stderr)
    except BenchError as e:
        exit_code = 1
        print(f"\nerror: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        exit_code = 130
        bench.runner.kill_current()
        print("\ninterrupted", file=sys.stderr)
    finally:
        bench.registries.stop_all()
        rows = summarize(bench.results)
        sys.stderr.flush()
        print_report(bench, rows)
        sys.stdout.flush()
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": bench.meta, "phases": rows, "scale": bench.scale, "exit_code": exit_code},
                          f, indent=2, default=lambda o: o.decode("latin-1") if isinstance(o, bytes) else str(o))
            log(f"\nwrote {args.json}")
        if args.keep:
            log(f"kept work dir {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
