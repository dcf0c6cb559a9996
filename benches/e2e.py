#!/usr/bin/env python3
"""End-to-end benchmark: imgsync vs. skopeo on realistic container images.

The harness
  1. generates two legacy `docker save`-format archives from real files of
     this machine's /usr (deterministic: sorted walk, fixed mtime/uid/gid):
       big   bench/big:1   ~--size-mb MiB in 5 uncompressed layers
       tiny  bench/tiny:1  25 layers of a few small text files each
  2. converts them into gzip-compressed OCI layouts (with skopeo, or with
     imgsync when skopeo is not installed) as inputs for the OCI source case,
  3. runs every scenario with both tools on the same inputs, a fresh
     destination for every run, one untimed warm-up per tool, then --runs
     timed repetitions (tool order alternates between repetitions):
       a  docker-archive -> oci, layers stored uncompressed
       b  docker-archive -> oci, layers gzip-compressed
       c  oci (gzip)     -> docker-archive
       d  docker-archive -> registry, layers gzip-compressed on the way
       d2 docker-archive -> registry, layers zstd-compressed on the way
       e  registry       -> registry (big image)
       f  registry       -> oci
       g  oci (gzip)     -> registry
       h  registry       -> docker-archive
       i  registry       -> registry (tiny image: 25 layers, request-bound)
     (e and i are the same operation; e runs on the big image, i on the tiny
     one.  Every other scenario runs on both images.)
  4. verifies the last output of every tool (index/manifest/config/blob
     digests and sizes, tag, rootfs.diff_ids, uncompressed layer digests;
     for e, f, g and i also that the copied manifest digest equals the
     source's; zstd layers are decompressed with the `zstd` command when
     it is installed),
  5. prints a table and optionally writes JSON.

Usage (from the project root):
    benches/e2e.py                          # 300 MiB image, 3 runs, both tools, all scenarios
    benches/e2e.py --size-mb 50 --runs 1 --tools skopeo
    benches/e2e.py --scenarios a,b --images big --json bench.json
    benches/e2e.py --scenarios registry     # d,d2,e,f,g,h,i (`local` is a,b,c)
    benches/e2e.py --inputs ~/.cache/imgsync-e2e   # reuse generated inputs
    benches/e2e.py --keep --workdir /var/tmp       # keep work dir for inspection

The imgsync binary defaults to target/release/imgsync under the project root;
it is built with `cargo build --release` when missing (--build always
rebuilds, --no-build never builds).

Code
  This file is the command line and the report; the scenarios are in
  e2e_local.py (a, b, c) and e2e_registry.py (d .. i), the shared parts
  (process measurement, image generation, verification, registries and
  the counting proxy) in the harness/ package.

Registries
  The registry scenarios use Debian's `docker-registry` (CNCF distribution,
  --registry) on 127.0.0.1, started by the harness and stopped when it
  exits: one source registry per image, filled once (untimed) from the gzip
  OCI layout, and a new, empty destination registry on a new port for every
  run; see e2e_registry.py.  Every registry sits behind a small counting
  HTTP/1.1 proxy in this process (harness/proxy.py).  Both tools talk to the
  proxies only, so both pay the same small overhead; the harness measures
  it once (a large blob fetched directly and through the proxy) and prints
  it.  The proxy refuses TLS, which is how the HTTPS probes of both tools
  fail.

Measurements
  wall     perf_counter() around the complete process lifetime; the best
           (minimum) of the timed runs is reported, the median is in JSON.
  RSS      ru_maxrss (KiB on Linux) from os.wait4() on exactly the measured
           process, started from a child-subreaper launcher so this
           interpreter's address space does not count (--rss-method
           reaper, the default; see harness/process.py).  The remaining
           floor (what /bin/true reports, typically < 1.5 MiB) is printed
           in the header.  --rss-method direct uses plain Popen + wait4.
           The registries and the proxy are not part of the measured
           process: wall time includes their work, CPU and RSS do not.
  output   apparent size in bytes of the destination (file size, or the sum
           of all file sizes below a directory); for a registry destination
           the bytes of all blobs the (fresh) registry stores afterwards:
           layers, config and manifest.
  requests HTTP requests the proxies forwarded during the run (source and
           destination registry together), identical for every run unless
           a range is shown.  The refused HTTPS probes are not included;
           they are in JSON (`tls_refused`), along with requests per method
           and bytes in each direction.  imgsync runs in the registry
           scenarios also get --json, whose own `requests` count (which
           includes its HTTPS probes) is recorded and cross-checked.
  ratio    best skopeo wall time / best imgsync wall time (> 1 means imgsync
           is faster).

The page cache is not dropped (that needs root); the warm-up runs make sure
both tools read warm inputs.  os.sync() is called (untimed) before every run
so write-back of the previous output does not leak into the next measurement.

Exit status is non-zero when any command fails (its stderr is printed) or an
output fails verification; --keep-going finishes the remaining cases first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # leave benches/ as it is
import e2e_local  # noqa: E402  (scenarios a, b, c)
import e2e_registry  # noqa: E402  (scenarios d .. i)
from harness import MIB, BenchError, log  # noqa: E402
from harness.copy_runs import Case, run_pair  # noqa: E402
from harness.images import IMAGES, generate_inputs  # noqa: E402
from harness.process import CommandFailed, Runner, find_imgsync, host_meta, launcher_floor, tool_version  # noqa: E402
from harness.registry import REGISTRY_BIN, Registries  # noqa: E402
from harness.tables import floor_note, print_aligned, print_proxy_check, print_versions  # noqa: E402

SCENARIOS = {**e2e_local.SCENARIOS, **e2e_registry.SCENARIOS}
LOCAL_SCENARIOS = list(e2e_local.SCENARIOS)
REGISTRY_SCENARIOS = list(e2e_registry.SCENARIOS)
SCENARIO_IMAGES = e2e_registry.SCENARIO_IMAGES


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def summarize(cases: list[Case]) -> list[dict]:
    rows = []
    best: dict[tuple[str, str, str], float] = {}
    for c in cases:
        if c.samples:
            best[(c.scenario, c.image, c.tool)] = min(s.wall_s for s in c.samples)
    for c in cases:
        row: dict[str, Any] = {
            "scenario": c.scenario,
            "scenario_name": SCENARIOS[c.scenario],
            "image": c.image,
            "tool": c.tool,
            "cmd": c.cmd,
            "runs": [dataclasses.asdict(s) for s in c.samples],
            "best_wall_s": None,
            "median_wall_s": None,
            "best_cpu_s": None,
            "peak_rss_mib": None,
            "output_bytes": c.output_bytes,
            "output_mib": None if c.output_bytes is None else c.output_bytes / MIB,
            "verified": c.verified,
            "verify_problems": c.problems,
            "error": c.error,
            "speedup_skopeo_over_imgsync": None,
            "registry": c.hooks is not None,
            "requests": None,
            "requests_min": None,
            "requests_max": None,
            "tls_refused": None,
            "imgsync_reported_requests": None,
        }
        counted = [s for s in c.samples if s.requests is not None]
        if counted:
            reqs = [s.requests for s in counted]
            row["requests"] = int(statistics.median_low(reqs))
            row["requests_min"], row["requests_max"] = min(reqs), max(reqs)
            row["tls_refused"] = counted[-1].traffic["tls_refused"]
            own = [s.self_reported_requests for s in counted if s.self_reported_requests is not None]
            row["imgsync_reported_requests"] = int(statistics.median_low(own)) if own else None
        if c.samples:
            row["best_wall_s"] = min(s.wall_s for s in c.samples)
            row["median_wall_s"] = statistics.median(s.wall_s for s in c.samples)
            row["best_cpu_s"] = min(s.user_s + s.sys_s for s in c.samples)
            row["peak_rss_mib"] = max(s.maxrss_kib for s in c.samples) / 1024
        if c.tool == "imgsync":
            a, b = best.get((c.scenario, c.image, "skopeo")), best.get((c.scenario, c.image, "imgsync"))
            if a and b:
                row["speedup_skopeo_over_imgsync"] = a / b
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    head = ["scenario", "image", "tool", "best wall s", "cpu s", "peak RSS MiB", "output MiB", "requests",
            "skopeo/imgsync", "check"]
    table = [head]
    for r in rows:
        def f(v, fmt):
            return "-" if v is None else format(v, fmt)

        check = "FAILED" if r["error"] else (
            "error" if any(p.startswith("error") for p in r["verify_problems"]) else
            "warn" if r["verify_problems"] else
            "ok" if r["verified"] else "-"
        )
        ratio = r["speedup_skopeo_over_imgsync"]
        if r["requests"] is None:
            requests = "-"
        elif r["requests_min"] == r["requests_max"]:
            requests = str(r["requests"])
        else:
            requests = f"{r['requests_min']}-{r['requests_max']}"
        table.append([
            f"{r['scenario']} {r['scenario_name']}",
            r["image"],
            r["tool"],
            f(r["best_wall_s"], ".3f"),
            f(r["best_cpu_s"], ".3f"),
            f(r["peak_rss_mib"], ".1f"),
            f(r["output_mib"], ".1f"),
            requests,
            "" if ratio is None else f"{ratio:.2f}x",
            check,
        ])
    print_aligned(table, numeric={3, 4, 5, 6, 7, 8})
    if any(r["registry"] for r in rows):
        print(
            "\nregistry scenarios: both tools reach every registry only through the same counting proxy;"
            "\n  requests = HTTP requests it forwarded (source and destination together), without the"
            "\n  refused HTTPS probes both tools make first; output MiB of a registry destination = blobs"
            "\n  stored by the fresh registry (layers, config, manifest)."
        )
    notes = [(r, p) for r in rows for p in r["verify_problems"]]
    if notes:
        print("\nverification notes:")
        seen = set()
        for r, p in notes:
            key = (r["scenario"], r["image"], r["tool"], p)
            if key not in seen:
                seen.add(key)
                print(f"  {r['scenario']}/{r['image']}/{r['tool']}: {p}")


def print_header(meta: dict, args: argparse.Namespace) -> None:
    parts = [f"runs={args.runs} (best of), warmup={args.warmup}"]
    if meta.get("inputs", {}).get("big"):
        big = meta["inputs"]["big"]
        parts.append(f"big={big['archive_bytes'] / MIB:.0f} MiB/{len(big['diff_ids'])} layers")
    if meta.get("inputs", {}).get("tiny"):
        parts.append(f"tiny={len(meta['inputs']['tiny']['diff_ids'])} layers")
    if meta.get("launcher_floor"):
        parts.append(floor_note(meta))
    print("; ".join(parts))
    print_versions(meta, ("skopeo_version", "imgsync_version", "registry_version"))
    print_proxy_check(meta)
    print()


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_list(value: str, allowed: list[str], what: str, groups: dict[str, list[str]] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    for g, members in (groups or {}).items():
        if g in items:
            items = [i for i in items if i != g] + members
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"invalid {what} {bad or value!r}; choose from {','.join(allowed)}")
    return [a for a in allowed if a in items]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=300, help="approximate size of the big image in MiB (default 300)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per tool and case (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per tool and case (default 1)")
    ap.add_argument("--tools", default="imgsync,skopeo", type=lambda v: parse_list(v, ["imgsync", "skopeo"], "tool"),
                    help="comma-separated tools to run (default imgsync,skopeo)")
    ap.add_argument("--scenarios", default=None,
                    type=lambda v: parse_list(v, list(SCENARIOS), "scenario",
                                              {"local": LOCAL_SCENARIOS, "registry": REGISTRY_SCENARIOS, "all": list(SCENARIOS)}),
                    help="comma-separated scenarios (default: all; groups `local` = a,b,c and `registry` ="
                         " d..i): " + "; ".join(f"{k}={v}" for k, v in SCENARIOS.items()))
    ap.add_argument("--registry", default=REGISTRY_BIN,
                    help=f"registry binary for the registry scenarios (CNCF distribution; default {REGISTRY_BIN})")
    ap.add_argument("--images", default="big,tiny", type=lambda v: parse_list(v, list(IMAGES), "image"),
                    help="comma-separated images (default big,tiny)")
    ap.add_argument("--imgsync", default="target/release/imgsync",
                    help="imgsync binary, relative paths are taken from the project root (default target/release/imgsync)")
    ap.add_argument("--skopeo", default=shutil.which("skopeo") or "/usr/bin/skopeo", help="skopeo binary")
    b = ap.add_mutually_exclusive_group()
    b.add_argument("--no-build", action="store_true", help="never run cargo build")
    b.add_argument("--build", action="store_true", help="always run cargo build --release first")
    ap.add_argument("--workdir", help="parent directory for the temporary work dir (default $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--inputs", help="persistent directory for generated inputs, reused when parameters match")
    ap.add_argument("--json", metavar="FILE", help="write results as JSON to FILE")
    ap.add_argument("--no-verify", action="store_true", help="skip verification of outputs")
    ap.add_argument("--keep-going", action="store_true", help="continue with remaining cases after a failure")
    ap.add_argument("--rss-method", choices=["auto", "reaper", "direct"], default="auto",
                    help="how processes are spawned for RSS measurement (see module docstring)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.size_mb < 1:
        ap.error("--runs must be >= 1, --warmup >= 0, --size-mb >= 1")
    registry_bin = shutil.which(args.registry)
    if args.scenarios is None:
        args.scenarios = list(SCENARIOS)
        if not registry_bin:
            log(f"registry binary {args.registry} not found: running the local scenarios only")
            args.scenarios = LOCAL_SCENARIOS
    elif not registry_bin and any(s in REGISTRY_SCENARIOS for s in args.scenarios):
        ap.error(f"registry scenarios need {args.registry} (Debian package docker-registry); see --registry")

    tools: dict[str, str] = {}
    if "imgsync" in args.tools:
        try:
            tools["imgsync"] = str(find_imgsync(args.imgsync, build=args.build, no_build=args.no_build))
        except BenchError as e:
            log(str(e))
            return 1
    skopeo = args.skopeo if shutil.which(args.skopeo) else None
    if "skopeo" in args.tools:
        if not skopeo:
            log(f"skopeo not found: {args.skopeo}")
            return 1
        tools["skopeo"] = skopeo

    workdir = Path(tempfile.mkdtemp(prefix="imgsync-e2e-", dir=args.workdir))
    inputs = Path(args.inputs).resolve() if args.inputs else workdir / "inputs"
    outdir = workdir / "out"
    outdir.mkdir()
    runner: Runner | None = None
    registries: Registries | None = None
    registry_scenarios: e2e_registry.RegistryScenarios | None = None
    all_cases: list[Case] = []
    exit_code = 0
    meta: dict[str, Any] = {
        **host_meta(),
        "imgsync": tools.get("imgsync"),
        "imgsync_version": tool_version([tools["imgsync"], "--version"]) if "imgsync" in tools else None,
        "skopeo_version": tool_version([skopeo, "--version"]) if skopeo else None,
        "registry_version": None,
        "size_mb": args.size_mb,
        "runs": args.runs,
        "warmup": args.warmup,
        "workdir": str(workdir),
    }
    try:
        log(f"work dir: {workdir}")
        stamp = generate_inputs(
            inputs, args.size_mb, skopeo, Path(tools["imgsync"]) if "imgsync" in tools else None, args.images
        )
        meta["inputs"] = {k: v for k, v in stamp["images"].items() if k in args.images}

        runner = Runner(args.rss_method, workdir)
        meta["rss_method"] = runner.method
        meta["launcher_floor"] = launcher_floor(runner)
        log(
            f"rss method: {runner.method}; /bin/true measures {meta['launcher_floor']['maxrss_kib'] / 1024:.1f} MiB"
            f" and {meta['launcher_floor']['wall_s'] * 1000:.1f} ms (launch overhead floor)"
        )

        if any(s in REGISTRY_SCENARIOS for s in args.scenarios):
            meta["registry_version"] = tool_version([registry_bin, "--version"])
            filler = ("skopeo", skopeo) if skopeo else ("imgsync", tools["imgsync"])
            registries = Registries(registry_bin, workdir / "registries")
            registry_scenarios = e2e_registry.RegistryScenarios(registries, filler)

        for scenario in args.scenarios:
            if not set(args.images) & set(SCENARIO_IMAGES.get(scenario, args.images)):
                log(f"scenario {scenario} ({SCENARIOS[scenario]}) runs on image {','.join(SCENARIO_IMAGES[scenario])} only: skipped")
            for image in args.images:
                if image not in SCENARIO_IMAGES.get(scenario, [image]):
                    continue
                image_meta = stamp["images"][image]
                if scenario in REGISTRY_SCENARIOS:
                    cases = e2e_registry.make_cases(scenario, image, tools, inputs, outdir, image_meta,
                                                    registry_scenarios)
                    if registry_scenarios.proxy_check:
                        meta["proxy_check"] = registry_scenarios.proxy_check
                else:
                    cases = e2e_local.make_cases(scenario, image, tools, inputs, outdir, image_meta)
                all_cases += cases
                log(f"scenario {scenario} ({SCENARIOS[scenario]}), image {image}")
                try:
                    run_pair(runner, cases, args.runs, args.warmup, not args.no_verify)
                except CommandFailed:
                    exit_code = 1
                    if not args.keep_going:
                        raise
        if any(p.startswith("error") for c in all_cases for p in c.problems):
            exit_code = 1
    except CommandFailed as e:
        exit_code = 1
        if not any(c.error for c in all_cases):  # not already reported by run_pair
            print(f"\n{e}\nstderr:\n{e.stderr.rstrip() or '(empty)'}", file=sys.stderr)
    except BenchError as e:
        exit_code = 1
        print(f"\nerror: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        exit_code = 130
        if runner:
            runner.kill_current()
        print("\ninterrupted", file=sys.stderr)
    finally:
        if registries:
            registries.stop_all()
        rows = summarize(all_cases)
        if rows:
            sys.stderr.flush()
            print()
            print_header(meta, args)
            print_table(rows)
            sys.stdout.flush()
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "results": rows, "exit_code": exit_code}, f, indent=2)
            log(f"\nwrote {args.json}")
        if args.keep:
            log(f"kept work dir {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
