"""The mirroring runs of the sync benchmark (run them with `benches/sync_bench.py`).

Bench seeds a source registry, runs cold / no-op / moved syncs with both
tools (and imgsync's no-op with a state file) into fresh target registries
and checks every target against the source; sync_scale.py times imgsync's
no-op over many tags.  See sync_bench.py for what is measured.
"""

from __future__ import annotations

import argparse
import http.client
import concurrent.futures
import dataclasses
import json
import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from harness import MIB, BenchError, log
from harness.images import build_base_layers, build_top_layer, write_docker_archive
from harness.layers import BuiltLayer
from harness.process import CommandFailed, Runner, Sample, check_output, launcher_floor, shell_join
from harness.registry import Endpoint, Registries, measure_proxy, merge_traffic
from harness.registry_api import RegistryClient
from harness.verify import verify_registry

SRC_PREFIX = "bench"
DST_PREFIX = "mirror"
TOOLS = ("imgsync", "skopeo")
# Tags that travel with their subject (referrers fallback tag, digest tag).
FALLBACK_TAG = re.compile(r"^sha256-[0-9a-f]{64}$")
ATTACHED_TAG = re.compile(r"^sha256-[0-9a-f]{64}(\.[A-Za-z0-9_.-]+)?$")
SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def attach_signatures(d: RegistryClient, repo: str, tag: str) -> None:
    """Gives repo:tag one signature referrer (listed in its fallback tag
    `sha256-<hex>`, as the referrers tag schema has it) and one cosign-style
    signature under the digest tag `sha256-<hex>.sig`."""
    digest, body, media_type = d.manifest(repo, tag)
    subject = {"mediaType": media_type, "digest": digest, "size": len(body)}
    empty = {"mediaType": EMPTY, "digest": d.push_blob(repo, b"{}"), "size": 2}

    def put(ref: str | None, doc: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(doc, separators=(",", ":")).encode()
        dg = "sha256:" + hashlib.sha256(raw).hexdigest()
        d.put_manifest(repo, ref or dg, raw, doc["mediaType"])
        return {"mediaType": doc["mediaType"], "digest": dg, "size": len(raw)}

    payload = f"signature of {digest}".encode()
    sig = put(None, {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIG_TYPE, "config": empty,
                     "layers": [{"mediaType": "application/example.signature", "digest": d.push_blob(repo, payload),
                                 "size": len(payload)}],
                     "subject": subject})
    sig["artifactType"] = SIG_TYPE
    hexpart = digest.split(":", 1)[1]
    put(f"sha256-{hexpart}", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig]})
    simple = json.dumps({"critical": {"image": {"docker-manifest-digest": digest}}}).encode()
    cfg = b'{"architecture":"","os":""}'
    put(f"sha256-{hexpart}.sig", {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                             "digest": d.push_blob(repo, cfg), "size": len(cfg)},
                                  "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                                              "digest": d.push_blob(repo, simple), "size": len(simple)}]})


def image_tags(tags: dict[str, str]) -> int:
    """How many of a repository's tags are images of their own (not attached tags)."""
    return sum(1 for t in tags if not ATTACHED_TAG.match(t))


PHASES = {
    "cold": "cold sync (empty target)",
    "noop": "no-op re-run",
    "noop-state": "no-op re-run with a state file (imgsync only)",
    "noop-immutable": "no-op re-run with a state file, every tag immutable (imgsync only)",
    "moved": "re-run, one tag moved",
    "budget": "cold sync through a 429 request budget at the source (imgsync only)",
}
# skopeo has no memory between runs: imgsync's phases with a state are
# compared with skopeo's plain no-op of the same run.
SKOPEO_PHASE = {"noop-state": "noop", "noop-immutable": "noop"}


def push_archive(imgsync: str, build_dir: Path, base: list[BuiltLayer], name: str, dest: str) -> list[str]:
    """Builds `name` (base layers + its own top layer), pushes it to dest; returns its DiffIDs."""
    top = build_top_layer(build_dir, name)
    archive = top.path.with_suffix(".docker.tar")
    meta = write_docker_archive(archive, name, base + [top])
    try:
        check_output([imgsync, "copy", "-q", f"docker-archive:{archive}", dest])
    finally:
        archive.unlink(missing_ok=True)
        top.path.unlink(missing_ok=True)
    return meta["diff_ids"]


def compare_mirror(source: dict[str, dict[str, str]], target_port: int, src_prefix: str,
                   source_listing: dict[tuple[str, str], set[str]] | None = None) -> list[str]:
    """Problems of a target registry that should mirror `source` below mirror/."""
    problems: list[str] = []
    d = RegistryClient(target_port)
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
                    got, body, _ = d.manifest(repo, tag)
                    if FALLBACK_TAG.match(tag):
                        # A referrers index is kept by each writer: the
                        # same referrers, not the same bytes.
                        listed = {m["digest"] for m in json.loads(body)["manifests"]}
                        src_repo = f"{src_prefix}/{repo[len(DST_PREFIX) + 1:]}"
                        if source_listing is not None:
                            want_listed = source_listing.get((src_repo, tag), set())
                            if not want_listed <= listed:
                                wrong.append(f"{repo}:{tag} lists {len(listed)} referrers, not the source's")
                        continue
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
    sample: Sample
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
        self.runner = Runner(args.rss_method, workdir)
        self.registries = Registries(registry_bin, workdir / "registries", args.rtt_ms)
        self.results: list[RunResult] = []
        self.scale: dict[str, Any] = {}
        self.budget: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.src: Endpoint | None = None
        self.diff_ids: dict[str, list[str]] = {}  # "repo:tag" -> DiffIDs
        self.source_state: dict[str, dict[str, str]] = {}
        # (repository, fallback tag) -> the referrer digests it lists.
        self.source_listing: dict[tuple[str, str], set[str]] = {}
        self.moved: dict[str, Any] = {}
        self.targets: dict[str, Endpoint] = {}
        self.order_flip = False
        self.failed = False

    # -- setup ----------------------------------------------------------

    def measure_floor(self) -> None:
        self.meta["rss_method"] = self.runner.method
        self.meta["launcher_floor"] = launcher_floor(self.runner)

    def seed_source(self) -> None:
        a = self.args
        self.src = self.registries.start("src")
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
        meta = write_docker_archive(self.moved_archive, moved_name, base + [top])
        self.moved_diff_ids = meta["diff_ids"]
        for l in base:
            l.path.unlink()
        top.path.unlink()
        d = RegistryClient(self.src.direct_port)
        try:
            if a.referrers:
                log("attaching a signature referrer and a .sig digest tag to every image ...")
                for r, t in names:
                    attach_signatures(d, r, t)
            self.source_state = d.snapshot(SRC_PREFIX)
            blobs: set[str] = set()
            layers: set[str] = set()
            for repo, tags in self.source_state.items():
                for tag in tags:
                    if FALLBACK_TAG.match(tag):
                        listed = json.loads(d.manifest(repo, tag)[1])["manifests"]
                        self.source_listing[(repo, tag)] = {m["digest"] for m in listed}
                    if ATTACHED_TAG.match(tag):
                        continue
                    m = json.loads(d.manifest(repo, tag)[1])
                    blobs.add(m["config"]["digest"])
                    layers.update(l["digest"] for l in m["layers"])
            dg, body, mt = d.manifest(self.moved_repo, self.moved_tag)
            self.original = {"digest": dg, "body": body, "media_type": mt}
            self.sample_manifest = d.manifest(f"{SRC_PREFIX}/svc-00", "1.0")
        finally:
            d.close()
        n_tags = sum(image_tags(t) for t in self.source_state.values())
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
        _, body, _ = self.sample_manifest
        self.meta["proxy_check"] = measure_proxy(self.src, f"{SRC_PREFIX}/svc-00", body)

    # -- the moved tag ----------------------------------------------------

    def move_tag(self) -> None:
        """Points the moved tag at the other image (untimed)."""
        if not self.moved:
            dest = f"127.0.0.1:{self.src.direct_port}/{self.moved_repo}:{self.moved_tag}"
            check_output([self.imgsync, "copy", "-q", f"docker-archive:{self.moved_archive}", dest])
            d = RegistryClient(self.src.direct_port)
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
        d = RegistryClient(self.src.direct_port)
        try:
            d.put_manifest(self.moved_repo, self.moved_tag, m["body"], m["media_type"])
            if d.manifest(self.moved_repo, self.moved_tag)[0] != m["digest"]:
                raise BenchError("the source tag does not have the digest just PUT")
        finally:
            d.close()

    # -- commands ---------------------------------------------------------

    def imgsync_cmd(self, name: str, src: Endpoint, prefix: str, dst: Endpoint,
                    state: Path | None = None, all_immutable: bool = False) -> list[str]:
        """The sync command (its config written as `name`.yaml); with
        `state`, `--state state`; with `all_immutable`, every tag of the
        entry is declared immutable (`immutable-tags: ['.*']`)."""
        cfg = self.workdir / f"{name}.yaml"
        limit = self.args.imgsync_max_requests
        cfg.write_text(
            "version: 1\n"
            + ("registries:\n" + "".join(f"  - host: {ep.addr}\n    max-requests: {limit}\n" for ep in (src, dst))
               if limit else "")
            + "sync:\n"
            f"  - source: {src.addr}/{prefix}/\n"
            f"    target: {dst.addr}/{DST_PREFIX}/\n"
            + ("    immutable-tags: ['.*']\n" if all_immutable else "")
        )
        jobs = ["--jobs", str(self.args.imgsync_jobs)] if self.args.imgsync_jobs else []
        with_state = ["--state", str(state)] if state else []
        return [self.imgsync, "sync", "--config", str(cfg), "--json", "-q", *jobs, *with_state]

    def skopeo_cmd(self, name: str, dst: Endpoint) -> list[str]:
        cfg = self.workdir / f"{name}.yaml"
        lines = [f"{self.src.addr}:", "  tls-verify: false", "  images:"]
        if self.args.referrers:
            # skopeo 1.9 cannot copy a referrers fallback index with
            # --preserve-digests ("Manifest list must be converted"): it gets
            # every other tag, the .sig digest tags as images of their own.
            for repo in sorted(self.source_state):
                lines.append(f"    {repo}:")
                lines += [f"      - {t!r}" for t in sorted(self.source_state[repo]) if not FALLBACK_TAG.match(t)]
        else:
            lines += [f"    {repo}: []" for repo in sorted(self.source_state)]
        cfg.write_text("\n".join(lines) + "\n")
        return [self.skopeo, "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                "--preserve-digests", str(cfg), f"{dst.addr}/{DST_PREFIX}"]

    def measure(self, phase: str, tool: str, run: int, cmd: list[str], endpoints: list[Endpoint]) -> RunResult:
        for ep in endpoints:
            ep.proxy.take()
        os.sync()
        sample, stderr = self.runner.run(cmd)
        traffic = merge_traffic([ep.proxy.take() for ep in endpoints])
        sample.requests = traffic["requests"]
        stem = self.logs / f"{phase}-{tool}-{run}-{len(self.results)}"
        stdout_path = self.runner.stdout_path
        shutil.copyfile(stdout_path, stem.with_suffix(".out"))
        stem.with_suffix(".err").write_text(stderr)
        if sample.rc != 0:
            print(f"\nFAILED ({tool}, {phase}): {shell_join(cmd)}\nexit status {sample.rc}; stderr:\n"
                  f"{stderr.rstrip()[-4000:] or '(empty)'}\n", file=sys.stderr)
            raise CommandFailed(cmd, sample.rc, stderr)
        res = RunResult(phase, tool, run, cmd, sample, traffic)
        # Per proxy: what the source sent and what the target received.
        src_proxy, dst_proxy = endpoints[0].proxy, endpoints[-1].proxy
        res.traffic["source_bytes_out"] = src_proxy.last["bytes_from_registry"]
        res.traffic["target_bytes_in"] = dst_proxy.last["bytes_to_registry"]
        for side, proxy in (("source", src_proxy), ("target", dst_proxy)):
            res.traffic[f"{side}_inflight_mean"] = proxy.last["inflight_mean"]
            res.traffic[f"{side}_inflight_max"] = proxy.last["inflight_max"]
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
            + f"  in flight {traffic['inflight_mean']:.1f}/{traffic['inflight_max']}"
            + f"  ({res.images_copied} copied, {res.images_up_to_date} up to date)")
        return res

    # -- checks -----------------------------------------------------------

    def check(self, res: RunResult, target: Endpoint, expect_copied: int | None, full: list[str]) -> None:
        # Attached tags travel with their image in imgsync; skopeo copies
        # them as images of their own.
        n_tags = sum(image_tags(t) for t in self.source_state.values())
        n_all = sum(len(t) for t in self.source_state.values())
        state = self.source_state
        if res.tool == "skopeo" and self.args.referrers:
            # It is not given the fallback tags (see skopeo_cmd).
            state = {r: {t: d for t, d in tags.items() if not FALLBACK_TAG.match(t)} for r, tags in state.items()}
        res.problems += compare_mirror(state, target.direct_port, SRC_PREFIX, self.source_listing)
        if res.tool == "imgsync" and res.report is not None:
            r = res.report
            want = {"copied": expect_copied, "up_to_date": n_tags - expect_copied, "failed": 0}
            if res.phase in SKOPEO_PHASE:
                # Every tag is known to the primed state and unchanged: no
                # target is asked, and the run is not a full check.
                want.update(state_skipped=n_tags, full_check=False)
            got = {k: r.get(k) for k in want}
            if got != want:
                res.problems.append(f"error: imgsync report says {got}, expected {want}")
            # Only a cold run copies every image with its referrers (with a
            # single source tag the moved run copies n_tags images too).
            if (self.args.referrers and res.phase == "cold" and expect_copied == n_tags
                    and r.get("referrers_copied") != 2 * n_tags):
                res.problems.append(f"error: imgsync copied {r.get('referrers_copied')} referrers,"
                                    f" expected {2 * n_tags} (a signature and a .sig tag per image)")
        elif res.tool == "skopeo" and expect_copied == 0 and res.images_copied != 0:
            res.problems.append(f"note: skopeo copied {res.images_copied} images in a no-op run")
        elif res.tool == "skopeo" and n_all != n_tags:
            pass  # attached tags are images to skopeo: its counts differ on purpose
        elif res.tool == "skopeo" and (res.images_copied, res.images_up_to_date) != (expect_copied, n_tags - expect_copied):
            res.problems.append(f"note: skopeo copied {res.images_copied} and skipped {res.images_up_to_date} images,"
                                f" expected {expect_copied} and {n_tags - expect_copied}")
        for ref in full:
            repo, _, tag = ref.rpartition(":")
            digest = self.source_state[repo][tag]
            dst_repo = f"{DST_PREFIX}/{repo[len(SRC_PREFIX) + 1:]}"
            problems = verify_registry(target.direct_port, dst_repo, tag, self.diff_ids[ref], "gzip",
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
        if tool == "imgsync" and (phase in SKOPEO_PHASE or phase == "state-prime"):
            immutable = phase == "noop-immutable"
            cmd = self.imgsync_cmd(f"imgsync-{dst.proxy.port}" + ("-immutable" if immutable else ""),
                                   self.src, SRC_PREFIX, dst, self.state_file(dst), immutable)
        elif tool == "imgsync":
            cmd = self.imgsync_cmd(f"imgsync-{dst.proxy.port}", self.src, SRC_PREFIX, dst)
        else:
            cmd = self.skopeo_cmd(f"skopeo-{dst.proxy.port}", dst)
        return self.measure(phase, tool, run, cmd, [self.src, dst])

    def state_file(self, dst: Endpoint) -> Path:
        """imgsync's state for one target (a new file for every new target)."""
        return self.workdir / f"{dst.proxy.label}.state.json"

    def state_phases(self, run: int) -> None:
        """imgsync's no-op with a state file, then with every tag immutable.
        One unmeasured run first writes the state: without one a run is a
        full check, as the plain no-op."""
        a = self.args
        dst = self.targets["imgsync"]
        log(f"run {run + 1}/{a.runs}: priming {self.state_file(dst).name} (not in the table)")
        prime = self.run_tool("state-prime", "imgsync", run)
        self.results.remove(prime)
        r = prime.report or {}
        if not r.get("full_check") or r.get("copied") != 0 or r.get("failed") != 0:
            raise BenchError(f"the run writing the state was not a full no-op check: {r}")
        if not self.state_file(dst).is_file():
            raise BenchError(f"imgsync sync --state wrote no {self.state_file(dst)}")
        for phase in SKOPEO_PHASE:
            log(f"run {run + 1}/{a.runs}: {phase} x{a.noop_runs}")
            for _ in range(a.noop_runs):
                res = self.run_tool(phase, "imgsync", run)
                self.check(res, dst, 0, [])

    def cycle(self, run: int) -> None:
        a = self.args
        n_tags = sum(image_tags(t) for t in self.source_state.values())
        moved_ref = f"{self.moved_repo}:{self.moved_tag}"
        if run > 0:
            self.restore_tag()
        for tool in TOOLS:
            if tool in self.targets:
                self.registries.stop(self.targets.pop(tool))
            self.targets[tool] = self.registries.start(f"dst-{tool}-{run}")
        log(f"run {run + 1}/{a.runs}: cold")
        for tool in self.tool_order():
            res = self.run_tool("cold", tool, run)
            self.check(res, self.targets[tool], n_tags, [f"{SRC_PREFIX}/svc-00:1.0"])
        log(f"run {run + 1}/{a.runs}: no-op x{a.noop_runs}")
        for k in range(a.noop_runs):
            for tool in self.tool_order():
                res = self.run_tool("noop", tool, run)
                self.check(res, self.targets[tool], 0, [])
        if a.state:
            self.state_phases(run)
        log(f"run {run + 1}/{a.runs}: moved ({moved_ref})")
        self.move_tag()
        for tool in self.tool_order():
            res = self.run_tool("moved", tool, run)
            self.check(res, self.targets[tool], 1, [moved_ref])
