"""The imgsync-only scale run of the sync benchmark (run it with
`benches/sync_bench.py`): one source of many tags over a few distinct
images, one cold `imgsync sync` that fills a fresh target, then timed no-op
runs; reported per tag.  See sync_bench.py for what is measured.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from harness import BenchError, log
from harness.process import check_output
from harness.registry_api import RegistryClient
from sync_mirror import SRC_PREFIX, Bench, RunResult, compare_mirror

SCALE_PREFIX = "scale"


def run_scale(bench: Bench) -> None:
    a = bench.args
    src = bench.registries.start("scale-src")
    dst = bench.registries.start("scale-dst")
    d = RegistryClient(src.direct_port)
    t0 = time.perf_counter()
    first = f"{SCALE_PREFIX}/r00"
    n_images = min(a.scale_images, a.scale_tags)
    log(f"scale: seeding {a.scale_repos} repositories x {a.scale_tags} tags over {n_images} images ...")
    try:
        # A few distinct images into the first repository (registry to registry, untimed).
        for k in range(n_images):
            r, t = divmod(k, a.tags)
            check_output([
                bench.imgsync, "copy", "-q",
                f"127.0.0.1:{bench.src.direct_port}/{SRC_PREFIX}/svc-{r % a.repos:02d}:1.{t}",
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
    cmd = bench.imgsync_cmd("imgsync-scale", src, SCALE_PREFIX, dst)
    runs: list[RunResult] = []

    def one(phase: str, expect_copied: int | None) -> RunResult:
        res = bench.measure(phase, "imgsync", 0, cmd, [src, dst])
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
            bench.failed = True
        return res

    log("scale: cold (fills the target)")
    cold = one("scale-cold", None)
    log(f"scale: no-op x{a.noop_runs}")
    for _ in range(a.noop_runs):
        runs.append(one("scale-noop", 0))
    # The per-tag rows are not part of the two-tool table.
    bench.results = [r for r in bench.results if not r.phase.startswith("scale")]
    best = min(runs, key=lambda r: r.sample.wall_s)
    reqs = [r.sample.requests for r in runs]
    bench.scale = {
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
    bench.registries.stop(src)
    bench.registries.stop(dst)
