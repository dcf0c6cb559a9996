"""The imgsync-only scale run of the sync benchmark (run it with
`benches/sync_bench.py`): one source of many tags over a few distinct
images, one cold `imgsync sync` that fills a fresh target, then timed no-op
runs without a state and, after one unmeasured run writes it, with a state
file; reported per tag and against the targets of a no-op with a state.
See sync_bench.py for what is measured.
"""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import threading
import time
from typing import Any, Callable

from harness import BenchError, log
from harness.process import check_output
from harness.registry import Endpoint
from harness.registry_api import RegistryClient
from sync_mirror import DST_PREFIX, SRC_PREFIX, Bench, RunResult

SCALE_PREFIX = "scale"
# The product's targets for a no-op with a state at 1,000 x 5 tags.
STATE_NOOP_MAX_S = 10.0
STATE_NOOP_MAX_RSS_MIB = 100.0
# Threads seeding and reading the registries straight (not measured).
SEED_THREADS = 8


def scale_names(repos: int, tags: int) -> tuple[list[str], list[str]]:
    """Repository and tag names, zero-padded to the widest number
    (scale/r00 .. scale/r09 for 10 repositories, scale/r0000 .. scale/r0999
    for 1,000; v000 ..)."""
    rw, tw = max(2, len(str(repos))), max(3, len(str(tags)))
    return ([f"{SCALE_PREFIX}/r{r:0{rw}d}" for r in range(repos)], [f"v{t:0{tw}d}" for t in range(tags)])


def in_parallel(port: int, items: list[Any], work: Callable[[RegistryClient, Any], Any]) -> list[Any]:
    """work(client, item) for every item on SEED_THREADS threads, each
    with its own keep-alive client of the registry at port."""
    local = threading.local()
    clients: list[RegistryClient] = []
    lock = threading.Lock()

    def one(item: Any) -> Any:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = RegistryClient(port)
            with lock:
                clients.append(c)
        return work(c, item)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
            return list(pool.map(one, items))
    finally:
        for c in clients:
            c.close()


def seed(bench: Bench, src: Endpoint, repos: list[str], tags: list[str], n_images: int) -> dict[str, dict[str, str]]:
    """Fills the scale source straight through the registry API: n_images
    images copied into the first repository, then for every repository
    cross-repository mounts of their blobs and a manifest PUT per tag.
    Returns repository -> tag -> digest as read back from the registry."""
    a = bench.args
    first = repos[0]
    for k in range(n_images):
        r, t = divmod(k, a.tags)
        check_output([
            bench.imgsync, "copy", "-q",
            f"127.0.0.1:{bench.src.direct_port}/{SRC_PREFIX}/svc-{r % a.repos:02d}:1.{t}",
            f"127.0.0.1:{src.direct_port}/{first}:{tags[k]}",
        ])
    d = RegistryClient(src.direct_port)
    try:
        manifests = [d.manifest(first, tags[k]) for k in range(n_images)]
    finally:
        d.close()
    blobs: list[str] = []
    for _, body, _ in manifests:
        m = json.loads(body)
        for desc in [m["config"], *m["layers"]]:
            if desc["digest"] not in blobs:
                blobs.append(desc["digest"])

    def fill(c: RegistryClient, repo: str) -> None:
        if repo != first:
            for dg in blobs:
                c.mount(repo, dg, first)
        for t, tag in enumerate(tags):
            _, body, mt = manifests[t % n_images]
            c.put_manifest(repo, tag, body, mt)

    in_parallel(src.direct_port, repos, fill)
    d = RegistryClient(src.direct_port)
    try:
        listed = [r for r in d.catalog() if r.startswith(SCALE_PREFIX + "/")]
    finally:
        d.close()
    return read_tags(src.direct_port, listed)


def read_tags(port: int, repos: list[str]) -> dict[str, dict[str, str]]:
    """repository -> tag -> manifest digest, read in parallel."""
    return dict(in_parallel(port, repos, lambda c, repo: (repo, {t: c.manifest(repo, t)[0] for t in c.tags(repo)})))


def check_target(state: dict[str, dict[str, str]], port: int) -> list[str]:
    """Problems of the target below mirror/ against the source `state`
    (compare_mirror's checks, read on several threads)."""
    want = {f"{DST_PREFIX}/{r[len(SCALE_PREFIX) + 1:]}": tags for r, tags in state.items()}
    try:
        d = RegistryClient(port)
        try:
            have_repos = d.catalog()
        finally:
            d.close()
        have = read_tags(port, [r for r in have_repos if r in want])
    except (BenchError, OSError, ValueError) as e:
        return [f"error: reading the target failed: {e}"]
    problems = []
    missing = sorted(set(want) - set(have_repos))
    extra = sorted(set(have_repos) - set(want))
    if missing:
        problems.append(f"error: {len(missing)} repositories missing at the target, first {missing[0]}")
    if extra:
        problems.append(f"error: {len(extra)} unexpected repositories at the target, first {extra[0]}")
    wrong = [f"{repo}:{tag}" for repo, tags in have.items() for tag in set(tags) | set(want[repo])
             if tags.get(tag) != want[repo].get(tag)]
    if wrong:
        problems.append(f"error: {len(wrong)} tags missing, unexpected or with another digest at the target,"
                        f" first {sorted(wrong)[0]}")
    return problems


def summary(runs: list[RunResult], n_tags: int) -> dict[str, Any]:
    """Best and median of repeated runs of one phase."""
    best = min(runs, key=lambda r: r.sample.wall_s)
    reqs = [r.sample.requests for r in runs]
    return {
        "runs": [r.as_json() for r in runs],
        "best_wall_s": best.sample.wall_s,
        "median_wall_s": statistics.median(r.sample.wall_s for r in runs),
        "best_cpu_s": min(r.sample.user_s + r.sample.sys_s for r in runs),
        "peak_rss_mib": max(r.sample.maxrss_kib for r in runs) / 1024,
        "requests": int(statistics.median_low(reqs)),
        "requests_min": min(reqs), "requests_max": max(reqs),
        "requests_by_method": best.traffic["by_method"],
        "tls_refused": best.traffic["tls_refused"],
        "requests_per_tag": statistics.median_low(reqs) / n_tags,
        "ms_per_tag": best.sample.wall_s / n_tags * 1000,
        "inflight_mean": statistics.median(r.traffic["inflight_mean"] for r in runs),
        "inflight_max": max(r.traffic["inflight_max"] for r in runs),
        "source_inflight_max": max(r.traffic["source_inflight_max"] for r in runs),
    }


def run_scale(bench: Bench) -> None:
    a = bench.args
    src = bench.registries.start("scale-src")
    dst = bench.registries.start("scale-dst")
    t0 = time.perf_counter()
    repos, tags = scale_names(a.scale_repos, a.scale_tags)
    n_images = min(a.scale_images, a.scale_tags)
    log(f"scale: seeding {a.scale_repos} repositories x {a.scale_tags} tags over {n_images} images ...")
    state = seed(bench, src, repos, tags, n_images)
    n_tags = sum(len(t) for t in state.values())
    log(f"  {len(state)} repositories, {n_tags} tags in {time.perf_counter() - t0:.1f}s")
    if n_tags != a.scale_repos * a.scale_tags or len(state) != a.scale_repos:
        raise BenchError(f"the scale source holds {len(state)} repositories and {n_tags} tags,"
                         f" expected {a.scale_repos} and {a.scale_repos * a.scale_tags}")
    cmd = bench.imgsync_cmd("imgsync-scale", src, SCALE_PREFIX, dst)
    state_file = bench.workdir / "scale.state.json"
    state_cmd = bench.imgsync_cmd("imgsync-scale-state", src, SCALE_PREFIX, dst, state_file)

    def one(phase: str, command: list[str], expect_copied: int | None, with_state: bool = False) -> RunResult:
        res = bench.measure(phase, "imgsync", 0, command, [src, dst])
        res.problems += check_target(state, dst.direct_port)
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
            if with_state:
                want.update(state_skipped=n_tags, full_check=False)
                got.update(state_skipped=r.get("state_skipped"), full_check=r.get("full_check"))
            ok = got == want
        if not ok:
            res.problems.append(f"error: imgsync report says {got}, expected {want}")
        for p in res.problems:
            log(f"    imgsync: {p}")
        if any(p.startswith("error") for p in res.problems):
            bench.failed = True
        return res

    log("scale: cold (fills the target)")
    cold = one("scale-cold", cmd, None)
    log(f"scale: no-op x{a.noop_runs}")
    noop = [one("scale-noop", cmd, 0) for _ in range(a.noop_runs)]
    log("scale: one no-op run writing the state (not measured)")
    prime = one("scale-state-prime", state_cmd, 0)
    if not state_file.is_file():
        raise BenchError(f"imgsync sync --state wrote no {state_file}")
    log(f"scale: no-op with the state x{a.noop_runs}")
    with_state = [one("scale-noop-state", state_cmd, 0, with_state=True) for _ in range(a.noop_runs)]
    # The per-tag rows are not part of the two-tool table.
    bench.results = [r for r in bench.results if not r.phase.startswith("scale")]
    st = summary(with_state, n_tags)
    targets = {
        f"median_wall_below_{STATE_NOOP_MAX_S:g}_s": st["median_wall_s"] < STATE_NOOP_MAX_S,
        f"peak_rss_at_most_{STATE_NOOP_MAX_RSS_MIB:g}_mib": st["peak_rss_mib"] <= STATE_NOOP_MAX_RSS_MIB,
    }
    st.update(targets=targets, passed=all(targets.values()))
    bench.scale = {
        "repositories": len(state), "tags": n_tags, "distinct_images_per_repo": n_images,
        "repository_names": f"{repos[0]} .. {repos[-1]}",
        "cold": cold.as_json(),
        "prime": prime.as_json(),
        "noop": summary(noop, n_tags),
        "noop_state": st,
        "problems": sorted({p for r in [cold, *noop, prime, *with_state] for p in r.problems}),
    }
    bench.registries.stop(src)
    bench.registries.stop(dst)


def print_scale(s: dict[str, Any]) -> None:
    if not s:
        return
    print(f"\nimgsync over {s['tags']} tags ({s['repositories']} repositories {s['repository_names']},"
          f" {s['distinct_images_per_repo']} images each):")
    c = s["cold"]
    print(f"  cold (fills the target): {c['sample']['wall_s']:.3f} s, {c['sample']['maxrss_kib'] / 1024:.1f} MiB RSS,"
          f" {c['sample']['requests']} requests ({c['sample']['requests'] / s['tags']:.2f}/tag: "
          + " ".join(f"{k} {v}" for k, v in c["traffic"]["by_method"].items())
          + f"), in flight {c['traffic']['inflight_mean']:.1f} mean / {c['traffic']['inflight_max']} max")
    for key, name in (("noop", "no-op"), ("noop_state", "no-op with state")):
        p = s[key]
        n = len(p["runs"])
        print(f"  {name} ({n} run{'s' if n > 1 else ''}): best {p['best_wall_s']:.3f} s, median {p['median_wall_s']:.3f} s"
              f" ({p['ms_per_tag']:.2f} ms/tag), cpu {p['best_cpu_s']:.3f} s, {p['peak_rss_mib']:.1f} MiB RSS,"
              f" {p['requests']} requests ({p['requests_per_tag']:.2f}/tag: "
              + " ".join(f"{k} {v}" for k, v in p["requests_by_method"].items())
              + f"), in flight {p['inflight_mean']:.1f} mean / {p['inflight_max']} max")
    st = s["noop_state"]
    marks = {True: "pass", False: "FAIL"}
    print(f"  targets of the no-op with state: median wall < {STATE_NOOP_MAX_S:g} s"
          f" {marks[st['median_wall_s'] < STATE_NOOP_MAX_S]}; peak RSS <= {STATE_NOOP_MAX_RSS_MIB:g} MiB"
          f" {marks[st['peak_rss_mib'] <= STATE_NOOP_MAX_RSS_MIB]}")
    for p in s["problems"]:
        print(f"  scale: {p}")
