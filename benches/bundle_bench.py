#!/usr/bin/env python3
"""Air-gap bundle benchmark: `imgsync save`/`load` vs. a skopeo loop and `docker save`.

Images
  Four images `bench/app-K:1` in a source registry (Debian docker-registry
  on loopback), sharing 3 base layers of ~--base-mib MiB of real files from
  /usr, each with a layer of its own of ~--app-mib MiB (text derived from
  the image name).  They are pushed once (untimed) with `imgsync copy`,
  which gzip-compresses layers on the way in.  The unique blobs (manifests,
  configs, base and own layers, as the registry stores them) are summed:
  that is the floor for any bundle that keeps digests.

Save (per tool, --runs timed runs, best reported)
  imgsync  `imgsync save -q -o bundle.tar REF1 .. REF4`: one bundle.
  skopeo   `skopeo copy docker://REF docker-archive:K.tar:REF` for each
           image, one after the other (one measured shell process).
  docker   `docker save -o d.tar REF1 .. REF4` after an untimed
           `docker pull` of the four (skipped with --no-docker or when no
           daemon answers; RSS is the CLI's, the daemon does the work).

Load (a fresh, empty registry for every run and tool)
  imgsync  `imgsync load -q bundle.tar --to DST/mirror`.
  skopeo   `skopeo copy docker-archive:K.tar docker://DST/mirror/app-K:1`
           for each of the archives skopeo saved.
  Temporary disk: both tools get TMPDIR (and imgsync IMGSYNC_TMPDIR) set to
  an empty directory that is polled during the run; its peak size is
  reported.  After imgsync's load the destination's manifest digests are
  checked against the source's.

Measurements (process launch and wait4 as in e2e.py: harness/process.py)
  wall   best of --runs, seconds;  RSS  peak ru_maxrss (a shell loop
  reports the largest of its children);  bytes  the files written (save)
  or blobs the destination registry stores (load);  ratio  other / imgsync
  wall time (> 1: imgsync is faster).

Targets: bundle <= unique blobs + 1 %; save >= 3x the skopeo loop; load
>= 2x the skopeo loop; peak RSS <= 64 MiB; temp disk of load = 0.

Usage (from the project root):
    benches/bundle_bench.py                     # 3 x 40 MiB base, 4 x 8 MiB own, 3 runs
    benches/bundle_bench.py --base-mib 10 --app-mib 2 --runs 1 --no-docker
    benches/bundle_bench.py --json bundle.json --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # leave benches/ as it is
from harness import MIB, BenchError, log  # noqa: E402
from harness.disk import TempWatch, dir_bytes  # noqa: E402
from harness.images import build_app_layer, build_base_layers, write_docker_archive  # noqa: E402
from harness.process import Runner, Sample, check_output, find_imgsync, shell_join  # noqa: E402
from harness.registry import REGISTRY_BIN, Registry  # noqa: E402
from harness.registry_api import RegistryClient  # noqa: E402

IMAGES = 4


def measure(runner: Runner, cmd: list[str], env: dict[str, str] | None = None) -> Sample:
    if env:
        cmd = ["env", *[f"{k}={v}" for k, v in env.items()], *cmd]
    sample, stderr = runner.run(cmd)
    if sample.rc != 0:
        raise BenchError(f"{shell_join(cmd)} failed ({sample.rc}):\n{stderr[-3000:]}")
    return sample


def loop_cmd(cmds: list[list[str]]) -> list[str]:
    """One shell process running commands one after the other."""
    return ["/bin/sh", "-c", " && ".join(shell_join(c) for c in cmds)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-mib", type=int, default=40, help="size of each of the 3 shared base layers (default 40)")
    ap.add_argument("--app-mib", type=int, default=8, help="size of each image's own layer (default 8)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per tool (default 3)")
    ap.add_argument("--imgsync", default="target/release/imgsync", help="imgsync binary (default target/release/imgsync)")
    ap.add_argument("--skopeo", default=shutil.which("skopeo") or "/usr/bin/skopeo")
    ap.add_argument("--registry", default=REGISTRY_BIN)
    ap.add_argument("--no-build", action="store_true", help="never run cargo build")
    ap.add_argument("--no-docker", action="store_true", help="skip docker save")
    ap.add_argument("--workdir", help="parent of the temporary work dir")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--json", metavar="FILE", help="write results as JSON")
    ap.add_argument("--rss-method", choices=["auto", "reaper", "direct"], default="auto")
    args = ap.parse_args(argv)

    imgsync = find_imgsync(args.imgsync, no_build=args.no_build)
    docker = None
    if not args.no_docker and shutil.which("docker"):
        ok = os.system("docker version --format '{{.Server.Version}}' >/dev/null 2>&1") == 0
        docker = shutil.which("docker") if ok else None

    work = Path(tempfile.mkdtemp(prefix="imgsync-bundle-bench-", dir=args.workdir))
    registries: list[Registry] = []
    results: dict[str, Any] = {"save": {}, "load": {}}
    try:
        runner = Runner(args.rss_method, work)
        build = work / "build"
        build.mkdir()

        def registry(name: str) -> Registry:
            r = Registry(args.registry, work / "registries" / f"{name}-{len(registries)}")
            registries.append(r)
            return r

        src = registry("src")
        log(f"building 3 base layers of ~{args.base_mib} MiB ...")
        base = build_base_layers(build, args.base_mib * 1024)
        refs = []
        for k in range(IMAGES):
            name = f"bench/app-{k}:1"
            top = build_app_layer(build, name, args.app_mib)
            archive = build / f"app-{k}.docker.tar"
            write_docker_archive(archive, name, base + [top])
            ref = f"127.0.0.1:{src.port}/{name}"
            check_output([str(imgsync), "copy", "-q", f"docker-archive:{archive}", ref])
            archive.unlink()
            top.path.unlink()
            refs.append(ref)
        for l in base:
            l.path.unlink()
        unique: dict[str, int] = {}
        source_digests = {}
        with RegistryClient(src.port) as s:
            for k in range(IMAGES):
                d, body, _ = s.manifest(f"bench/app-{k}", "1")
                source_digests[k] = d
                m = json.loads(body)
                unique[d] = len(body)
                unique[m["config"]["digest"]] = m["config"]["size"]
                for l in m["layers"]:
                    unique[l["digest"]] = l["size"]
        unique_bytes = sum(unique.values())
        log(f"source: {IMAGES} images, {len(unique)} unique blobs, {unique_bytes / MIB:.1f} MiB")

        tools_save = {
            "imgsync": lambda out: [str(imgsync), "save", "-q", "-o", str(out / "bundle.tar"), *refs],
            "skopeo": lambda out: loop_cmd([
                [args.skopeo, "copy", "-q", "--src-tls-verify=false", f"docker://{r}",
                 f"docker-archive:{out / f'{k}.tar'}:{r.split('/', 1)[1]}"]
                for k, r in enumerate(refs)]),
        }
        if docker:
            for r in refs:
                check_output([docker, "pull", "-q", r])
            tools_save["docker save"] = lambda out: [docker, "save", "-o", str(out / "d.tar"), *refs]
        outs: dict[str, Path] = {}
        for tool, make in tools_save.items():
            best = None
            for run in range(args.runs):
                out = work / f"save-{tool.replace(' ', '-')}-{run}"
                out.mkdir()
                os.sync()
                sample = measure(runner, make(out))
                size = dir_bytes(out)
                if best is None or sample.wall_s < best["wall_s"]:
                    best = {"wall_s": sample.wall_s, "maxrss_kib": sample.maxrss_kib, "bytes": size}
                if run < args.runs - 1:
                    shutil.rmtree(out)
                else:
                    outs[tool] = out
            results["save"][tool] = best
            log(f"save {tool}: {best['wall_s']:.2f}s, {best['maxrss_kib'] / 1024:.0f} MiB RSS, {best['bytes'] / MIB:.1f} MiB")
        if docker:
            for r in refs:
                check_output([docker, "rmi", "-f", r])

        tmp = work / "tmp"
        tmp.mkdir()
        tools_load = {
            "imgsync": lambda port: [str(imgsync), "load", "-q", str(outs["imgsync"] / "bundle.tar"),
                                     "--to", f"127.0.0.1:{port}/mirror"],
            "skopeo": lambda port: loop_cmd([
                [args.skopeo, "copy", "-q", "--dest-tls-verify=false",
                 f"docker-archive:{outs['skopeo'] / f'{k}.tar'}",
                 f"docker://127.0.0.1:{port}/mirror/bench/app-{k}:1"]
                for k in range(IMAGES)]),
        }
        for tool, make in tools_load.items():
            best = None
            for run in range(args.runs):
                dst = registry(f"dst-{tool}")
                os.sync()
                with TempWatch(tmp) as watch:
                    sample = measure(runner, make(dst.port), {"TMPDIR": str(tmp), "IMGSYNC_TMPDIR": str(tmp)})
                stored = dst.blob_bytes()
                if tool == "imgsync":
                    with RegistryClient(dst.port) as d:
                        for k in range(IMAGES):
                            got = d.manifest(f"mirror/bench/app-{k}", "1")[0]
                            if got != source_digests[k]:
                                raise BenchError(f"imgsync load: app-{k} is {got}, the source has {source_digests[k]}")
                dst.stop()
                registries.remove(dst)
                shutil.rmtree(dst.root, ignore_errors=True)
                if best is None or sample.wall_s < best["wall_s"]:
                    best = {"wall_s": sample.wall_s, "maxrss_kib": sample.maxrss_kib, "bytes": stored,
                            "temp_peak_bytes": watch.peak}
            results["load"][tool] = best
            log(f"load {tool}: {best['wall_s']:.2f}s, {best['maxrss_kib'] / 1024:.0f} MiB RSS, "
                f"temp peak {best['temp_peak_bytes'] / MIB:.1f} MiB")

        results["unique_blob_bytes"] = unique_bytes
        results["images"] = IMAGES
        results["base_mib"] = args.base_mib
        results["app_mib"] = args.app_mib
        bundle = results["save"]["imgsync"]["bytes"]
        print()
        print(f"{IMAGES} images, 3 shared base layers of ~{args.base_mib} MiB + ~{args.app_mib} MiB each; "
              f"unique blobs {unique_bytes / MIB:.1f} MiB; best of {args.runs}")
        print(f"{'phase':<6} {'tool':<12} {'wall s':>8} {'RSS MiB':>8} {'MiB':>8} {'temp MiB':>9} {'ratio':>7}")
        for phase in ("save", "load"):
            base_wall = results[phase]["imgsync"]["wall_s"]
            for tool, r in results[phase].items():
                ratio = r["wall_s"] / base_wall
                temp = f"{r['temp_peak_bytes'] / MIB:9.1f}" if "temp_peak_bytes" in r else f"{'':>9}"
                print(f"{phase:<6} {tool:<12} {r['wall_s']:8.2f} {r['maxrss_kib'] / 1024:8.1f} "
                      f"{r['bytes'] / MIB:8.1f} {temp} {ratio:6.2f}x")
        overhead = (bundle - unique_bytes) / unique_bytes * 100
        print(f"bundle overhead over unique blobs: {bundle - unique_bytes} bytes ({overhead:.3f} %)")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        for r in registries:
            r.stop()
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bundle_bench: {e}", file=sys.stderr)
        sys.exit(1)
