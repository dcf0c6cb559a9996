#!/usr/bin/env python3
"""Registry mirroring benchmark: `imgsync sync` vs. `skopeo sync`.

The harness starts Debian `docker-registry` instances on loopback (each
behind the counting HTTP proxy of harness/proxy.py, which both tools talk
to), seeds a source registry and mirrors it with both tools.  This file is
the command line and the report, sync_mirror.py the runs and checks,
sync_scale.py the imgsync-only scale run, sync_budget.py the imgsync-only
run against a request budget; registries, the proxy, image layers and the
RSS-measuring launcher come from the harness/ package.

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
  noop-state  (imgsync only; --no-state skips it and the next) imgsync with
          `--state WORKDIR/<target>.state.json`: one unmeasured no-op run
          writes the state (a run without one is a full check), then
          --noop-runs runs are measured: a source HEAD per tag and the tag
          listings, the target not asked.
  noop-immutable  (imgsync only) the same state, and the entry of the config
          declares every tag immutable (`immutable-tags: ['.*']`): mirrored
          tags cost no request at all, the floor of a no-op (listings only).
          skopeo has no memory between runs: the ratios of both phases are
          against skopeo's `noop` of the same run.
  moved   one source tag (bench/svc-07:1.1) is moved to a new image (pushed
          untimed with `imgsync copy`) and both tools run again (imgsync
          without a state).
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

Referrers (--referrers)
  Every source image also gets, untimed through the registry API, one
  signature referrer (an OCI artifact whose `subject` is the image, listed in
  the referrers fallback tag `sha256-<hex>`, as distribution 2.8 has no
  referrers API) and one cosign-style signature under `sha256-<hex>.sig`.
  imgsync carries both with their image (its report counts images without
  them); skopeo sync (with --all, which the fallback index needs) copies the
  two tags as images of their own.  The target check then compares a
  fallback tag by the referrers it lists (each writer keeps its own index
  bytes), every other tag by digest.

  --no-mirror skips these two-tool phases (the source is still seeded: the
  budget and scale runs start from it).

Request budget (--budget N/W; imgsync only)
  A second proxy in front of the source registry, with the run's --rtt-ms,
  answers at most N requests per fixed window of W seconds (windows count
  from the run's first request; every request counts, whatever its method:
  Docker Hub counts manifest GETs only, counting all is the harsher test).
  Requests over the budget are refused by the proxy, not forwarded: 429
  with `Retry-After` (seconds to the end of the window, rounded up),
  `ratelimit-limit: N;w=W`, `ratelimit-remaining: 0;w=W` and a
  TOOMANYREQUESTS error body; forwarded answers carry the two ratelimit
  headers with what is left of the window.  One cold `imgsync sync` of the
  source into a fresh target goes through it (checked as the cold phase).
  Reported: wall time, requests, 429s, 429s after the first window as a
  share of the requests after it, requests and 429s per window, the most
  times one request (method + path) was refused within one window, and
  the targets: the run completes (exit 0, target verified), no request is
  refused twice in one window, 429s after the first window < 5 %.  skopeo
  is not run against it: it has no pause on 429.

Scale (imgsync only; --no-scale skips it)
  --scale-repos (10) repositories x --scale-tags (100) tags pointing at
  --scale-images (4) distinct images per repository, in a registry of
  their own (names scale/r00 .., scale/r000 .. from 100 repositories on,
  scale/r0000 .. scale/r0999 for 1,000).
  Seeding, straight to the registry (not through the proxy, no latency):
  `imgsync copy` of the distinct images into the first repository, then
  for every repository cross-repository blob mounts and a manifest PUT per
  tag, on 8 threads.  Measured through the proxies (with --rtt-ms): one
  cold `imgsync sync` fills a fresh target, --noop-runs no-op runs without
  a state, one unmeasured run writes `--state`, then --noop-runs no-op runs
  with it.  Reported: seconds (best and median), requests, both per tag,
  requests in flight, peak RSS; for the no-op with state also the targets
  median wall < 10 s and peak RSS <= 100 MiB.  The target is checked
  against the source after every run.

Latency (--rtt-ms N, default 0)
  Loopback registries answer in well under a millisecond; real mirrors talk
  to registries 20-150 ms away.  --rtt-ms N makes every proxy of the run
  behave like a network path of N ms round-trip time: each request reaches
  the registry N/2 ms late, each response reaches the tool N/2 ms late, and
  a new connection's first request waits one more N ms (the TCP handshake);
  refused HTTPS probes take the handshake plus a round trip.  Bandwidth is
  not limited.  The delay is slept in the proxy's per-connection thread:
  it adds to wall time, not to the tools' CPU, and not to request counts.
  The proxy check in the header is measured without it.  skopeo 1.9 sends
  `Connection: close` with every request (the proxy's connection count
  equals its request count), so it pays a handshake per request, as it
  would over a real network (where TLS would add more round trips still).

Measurements (as in e2e.py)
  wall      perf_counter() around the process lifetime (best and median of
            the runs).
  cpu       user + system time of exactly the measured process (wait4).
  RSS       peak ru_maxrss of the measured process (child-subreaper
            launcher, see harness/process.py; the launcher floor is printed).
  requests  HTTP requests the proxies forwarded (source and target
            together), without the refused HTTPS probes both tools make
            first (`tls_refused` in JSON).
  req/tag   requests per source image tag (`requests_per_tag` in JSON).
  in flight requests in flight (from the request's head reaching a proxy to
            its response fully forwarded), source and target proxies
            together: mean weighted by time over the span from the first
            request to the last response, and maximum of the sum (JSON also
            has the source's and the target's maximum alone).  Over
            repeated runs: the median mean and the largest maximum.
  429s      requests refused by the budget proxy (--budget).
  MiB src   bytes the source proxy sent to the tool (manifests, configs,
            layers, listings).
  MiB dst   bytes the tool sent to the target proxy (uploads, manifests).
  ratio     skopeo / imgsync, for wall time and for requests (> 1 means
            imgsync is faster or makes fewer requests).

Usage (from the project root):
    benches/sync_bench.py                     # 20x3 images, 1 run, no-op best of 3, 1,000-tag scale run
    benches/sync_bench.py --runs 3 --noop-runs 5 --json sync.json
    benches/sync_bench.py --no-scale --repos 5 --tags 2
    benches/sync_bench.py --no-scale --referrers --repos 5 --tags 2 --base-kib 64
    benches/sync_bench.py --no-scale --imgsync-jobs 1   # imgsync one image at a time, like skopeo
    benches/sync_bench.py --no-scale --repos 10 --tags 2 --base-kib 64 --rtt-ms 50   # registries 50 ms away
    benches/sync_bench.py --no-scale --no-state                                      # without imgsync's state phases
    benches/sync_bench.py --imgsync-max-requests 64                                  # `max-requests: 64` for both registries
    benches/sync_bench.py --no-scale --repos 40 --tags 3 --base-kib 1024 --rtt-ms 50 --budget 150/2   # and a 429 budget
    benches/sync_bench.py --no-mirror --no-scale --repos 40 --tags 3 --rtt-ms 50 --budget 150/2       # the budget run alone
    benches/sync_bench.py --no-mirror --scale-repos 1000 --scale-tags 5 --rtt-ms 50 --noop-runs 3     # 5,000 tags at 50 ms
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
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # leave benches/ as it is
from harness import MIB, BenchError, log  # noqa: E402
from harness.process import CommandFailed, find_imgsync, host_meta, tool_version  # noqa: E402
from harness.registry import REGISTRY_BIN  # noqa: E402
from harness.tables import floor_note, print_aligned, print_proxy_check, print_versions  # noqa: E402
from sync_mirror import PHASES, SKOPEO_PHASE, TOOLS, Bench, RunResult  # noqa: E402
from sync_budget import parse_budget, print_budget, run_budget  # noqa: E402
from sync_scale import print_scale, run_scale  # noqa: E402


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def summarize(results: list[RunResult], n_tags: int | None) -> list[dict[str, Any]]:
    rows = []
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for phase in PHASES:
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
                "requests_per_tag": statistics.median_low(reqs) / n_tags if n_tags else None,
                "requests_min": min(reqs),
                "requests_max": max(reqs),
                "requests_by_method": rs[0].traffic["by_method"],
                "tls_refused": rs[0].traffic["tls_refused"],
                # Source and target proxies together (see the docstring).
                "inflight_mean": statistics.median(r.traffic["inflight_mean"] for r in rs),
                "inflight_max": max(r.traffic["inflight_max"] for r in rs),
                "source_inflight_max": max(r.traffic["source_inflight_max"] for r in rs),
                "target_inflight_max": max(r.traffic["target_inflight_max"] for r in rs),
                "refused_429": sum(r.traffic.get("refused_429", 0) for r in rs),
                "source_mib": statistics.median(r.traffic["source_bytes_out"] for r in rs) / MIB,
                "target_mib": statistics.median(r.traffic["target_bytes_in"] for r in rs) / MIB,
                "images_copied": rs[0].images_copied,
                "images_up_to_date": rs[0].images_up_to_date,
                "imgsync_reported": rs[0].report,
                "problems": sorted({p for r in rs for p in r.problems}),
                "wall_ratio_skopeo_over_imgsync": None,
                "requests_ratio_skopeo_over_imgsync": None,
                "ratio_against_skopeo_phase": None,
                "samples": [r.as_json() for r in rs],
            }
            best[(phase, tool)] = row
            rows.append(row)
        i, s = best.get((phase, "imgsync")), best.get((SKOPEO_PHASE.get(phase, phase), "skopeo"))
        if i and s:
            i["ratio_against_skopeo_phase"] = s["phase"]
            i["wall_ratio_skopeo_over_imgsync"] = s["best_wall_s"] / i["best_wall_s"]
            if i["requests"]:
                i["requests_ratio_skopeo_over_imgsync"] = s["requests"] / i["requests"]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["phase", "tool", "wall s", "med s", "cpu s", "RSS MiB", "requests", "req/tag", "in flight", "probes",
            "MiB src", "MiB dst", "images", "wall sk/is", "req sk/is", "check"]
    table = [head]
    for r in rows:
        images = f"{r['images_copied']} copied, {r['images_up_to_date']} up to date"
        reqs = str(r["requests"]) if r["requests_min"] == r["requests_max"] else f"{r['requests_min']}-{r['requests_max']}"
        check = ("error" if any(p.startswith("error") for p in r["problems"])
                 else "warn" if any(p.startswith("warning") for p in r["problems"]) else "ok")
        wr, rr = r["wall_ratio_skopeo_over_imgsync"], r["requests_ratio_skopeo_over_imgsync"]
        label = f"{r['phase']}" + (f" ({r['runs']} runs)" if r["runs"] > 1 else "")
        per_tag = "" if r["requests_per_tag"] is None else f"{r['requests_per_tag']:.2f}"
        table.append([
            label, r["tool"], f"{r['best_wall_s']:.3f}", f"{r['median_wall_s']:.3f}", f"{r['best_cpu_s']:.3f}",
            f"{r['peak_rss_mib']:.1f}", reqs, per_tag, f"{r['inflight_mean']:.1f}/{r['inflight_max']}",
            str(r["tls_refused"]), f"{r['source_mib']:.1f}", f"{r['target_mib']:.1f}", images,
            "" if wr is None else f"{wr:.2f}x", "" if rr is None else f"{rr:.2f}x", check,
        ])
    print_aligned(table, numeric={2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14})


def print_report(bench: Bench, rows: list[dict[str, Any]]) -> None:
    m = bench.meta
    a = bench.args
    src = m.get("source", {})
    print()
    print(f"source: {src.get('repositories', '?')} repositories x {a.tags} tags = {src.get('tags', '?')} images,"
          f" {src.get('distinct_layers', '?')} distinct layers, {src.get('stored_bytes', 0) / MIB:.1f} MiB stored;"
          f" moved tag {src.get('moved_tag', '?')}")
    parts = [f"runs={a.runs} (cold, moved), no-op runs={a.noop_runs} per run"]
    parts.append(f"network RTT {a.rtt_ms:g} ms (simulated by the proxies)" if a.rtt_ms
                 else "network RTT 0 (loopback)")
    if m.get("launcher_floor"):
        parts.append(floor_note(m))
    parts.append(f"cpus={m.get('cpus')}")
    print("; ".join(parts))
    print_versions(m, ("imgsync_version", "skopeo_version", "registry_version"))
    print_proxy_check(m)
    print()
    if rows:
        print_table(rows)
        print(
            "\nwall s = best of the runs, med s = their median; in flight = requests in flight at the source and"
            "\n  target proxies together, mean over the run's span of requests / max (median mean, max max of the runs)"
            "\nrequests = HTTP requests through the counting proxies (source + target); probes = refused HTTPS"
            "\n  connection attempts (not in requests); MiB src = bytes the source registry sent, MiB dst = bytes"
            "\n  sent to the target registry; sk/is = skopeo / imgsync (> 1: imgsync faster or fewer requests);"
            "\n  req/tag = requests per source tag. noop-state and noop-immutable are imgsync with --state (primed"
            "\n  by one unmeasured run), the latter with every tag immutable; their ratios are against skopeo's noop."
        )
        print("\nimgsync's own report (first run of each phase):")
        for r in rows:
            rep = r["imgsync_reported"]
            if rep:
                print(f"  {r['phase']:14s} {rep['copied']} copied, {rep['up_to_date']} up to date, {rep['failed']} failed;"
                      f" blobs {rep['blobs_copied']} uploaded, {rep['blobs_mounted']} mounted, {rep['blobs_skipped']}"
                      f" skipped; {rep.get('state_skipped', 0)} known from the state; {rep['bytes'] / MIB:.2f} MiB;"
                      f" {rep['requests']} requests; seconds {rep['seconds']:.3f}"
                      f" (wall {r['samples'][0]['sample']['wall_s']:.3f})")
        by_method = [f"  {r['phase']:14s} {r['tool']:8s} " + " ".join(f"{k} {v}" for k, v in r["requests_by_method"].items())
                     for r in rows]
        print("\nrequests by method (first run of each phase):")
        print("\n".join(by_method))
    print_budget(bench.budget)
    print_scale(bench.scale)
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
    ap.add_argument("--referrers", action="store_true",
                    help="give every source image one signature referrer (in its referrers fallback tag) and one"
                         " cosign-style .sig digest tag; imgsync carries them with their image, skopeo copies the"
                         " tags as images of their own")
    ap.add_argument("--rtt-ms", type=float, default=0.0, metavar="N",
                    help="simulate registries N ms of round-trip time away: every proxy delays each direction"
                         " by N/2 ms and a new connection by one more N ms (default 0: loopback)")
    ap.add_argument("--no-state", dest="state", action="store_false",
                    help="skip imgsync's no-op runs with a state file (noop-state, noop-immutable)")
    ap.add_argument("--no-mirror", action="store_true",
                    help="skip the two-tool cold / no-op / moved runs (the source is still seeded for the others)")
    ap.add_argument("--budget", metavar="N/W",
                    help="also run imgsync's cold sync through a source that answers at most N requests per W"
                         " seconds and refuses the rest with 429 (e.g. 150/2)")
    ap.add_argument("--no-scale", action="store_true", help="skip the imgsync no-op run over many tags")
    ap.add_argument("--scale-repos", type=int, default=10, help="repositories of the scale run (default 10)")
    ap.add_argument("--scale-tags", type=int, default=100, help="tags per repository of the scale run (default 100)")
    ap.add_argument("--scale-images", type=int, default=4, help="distinct images per scale repository (default 4)")
    ap.add_argument("--imgsync-jobs", type=int, metavar="N",
                    help="pass --jobs N to imgsync sync (default: imgsync's own default; 1 copies one image"
                         " at a time, as skopeo sync does)")
    ap.add_argument("--imgsync-max-requests", type=int, metavar="N",
                    help="give the source and target registries `max-requests: N` in imgsync's config (default:"
                         " none, imgsync's own default)")
    ap.add_argument("--imgsync", default="target/release/imgsync",
                    help="imgsync binary, relative to the project root (default target/release/imgsync)")
    ap.add_argument("--no-build", action="store_true", help="never run cargo build")
    ap.add_argument("--skopeo", default="/usr/bin/skopeo", help="skopeo binary (default /usr/bin/skopeo)")
    ap.add_argument("--registry", default=REGISTRY_BIN, help=f"registry binary (default {REGISTRY_BIN})")
    ap.add_argument("--rss-method", choices=["auto", "reaper", "direct"], default="auto",
                    help="how processes are spawned for RSS measurement (see harness/process.py)")
    ap.add_argument("--workdir", help="parent directory of the temporary work dir (default $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (registry storage, configs, logs)")
    ap.add_argument("--json", metavar="FILE", help="write results as JSON to FILE")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.noop_runs < 1 or args.repos < 1 or args.tags < 1 or args.base_kib < 16:
        ap.error("--runs, --noop-runs, --repos, --tags must be >= 1 and --base-kib >= 16")
    if not 0 <= args.rtt_ms <= 10000:
        ap.error("--rtt-ms must be between 0 and 10000")
    if args.scale_repos < 1 or args.scale_tags < 1 or args.scale_images < 1:
        ap.error("--scale-repos, --scale-tags, --scale-images must be >= 1")
    budget = None
    if args.budget:
        try:
            budget = parse_budget(args.budget)
        except ValueError as e:
            ap.error(f"--budget: {e}")

    try:
        imgsync = find_imgsync(args.imgsync, no_build=args.no_build)
    except BenchError as e:
        log(str(e))
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
        **host_meta(),
        "imgsync": str(imgsync),
        "imgsync_version": tool_version([str(imgsync), "--version"]),
        "skopeo_version": tool_version([skopeo, "--version"]),
        "registry_version": tool_version([registry_bin, "--version"]),
        "workdir": str(workdir),
        "args": vars(args),
    })
    exit_code = 0
    try:
        log(f"work dir: {workdir}")
        bench.measure_floor()
        bench.seed_source()
        if not args.no_mirror:
            for run in range(args.runs):
                bench.cycle(run)
        if budget:
            run_budget(bench, budget)
        if not args.no_scale:
            run_scale(bench)
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
        rows = summarize(bench.results, bench.meta.get("source", {}).get("tags"))
        sys.stderr.flush()
        print_report(bench, rows)
        sys.stdout.flush()
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": bench.meta, "phases": rows, "scale": bench.scale, "budget": bench.budget,
                           "exit_code": exit_code},
                          f, indent=2, default=lambda o: o.decode("latin-1") if isinstance(o, bytes) else str(o))
            log(f"\nwrote {args.json}")
        if args.keep:
            log(f"kept work dir {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
