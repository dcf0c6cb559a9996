"""The request-budget scenario of the sync benchmark (run it with
`benches/sync_bench.py --budget N/W`): an imgsync cold sync of the source
through a proxy that answers at most N requests per W-second window and
refuses the rest with 429 and `Retry-After` (harness/proxy.py), as a
rate-limited registry does.  imgsync only: skopeo has no pause on 429 and
would take minutes longer at every refusal.  See sync_bench.py for what is
measured and the targets.
"""

from __future__ import annotations

from typing import Any

from harness import log
from harness.process import CommandFailed
from sync_mirror import SRC_PREFIX, Bench, image_tags

# The share of 429s among the requests after the first window a run may
# have (the product's target), and how often one request may be refused
# in one window: once, as the Retry-After given points past its end.
MAX_429_SHARE = 0.05
MAX_REFUSALS_PER_WINDOW = 1


def parse_budget(text: str) -> tuple[int, float]:
    """`N/W` (requests per W seconds) as (N, W); ValueError if it is not one."""
    n, sep, w = text.partition("/")
    limit, window = int(n), float(w) if sep else 1.0
    if limit < 1 or not 0 < window <= 3600:
        raise ValueError(f"{text!r}: N must be >= 1 and W between 0 and 3600 seconds")
    return limit, window


def run_budget(bench: Bench, budget: tuple[int, float]) -> None:
    n_tags = sum(image_tags(t) for t in bench.source_state.values())
    limited = bench.registries.budget_proxy(bench.src, "src-budget", budget)
    dst = bench.registries.start("dst-budget")
    cmd = bench.imgsync_cmd("imgsync-budget", limited, SRC_PREFIX, dst)
    log(f"budget: imgsync cold sync through a budget of {budget[0]} requests per {budget[1]:g} s at the source")
    out: dict[str, Any] = {"limit": budget[0], "window_s": budget[1], "cmd": cmd}
    res = None
    try:
        res = bench.measure("budget", "imgsync", 0, cmd, [limited, dst])
        bench.check(res, dst, n_tags, [f"{SRC_PREFIX}/svc-00:1.0"])
    except CommandFailed as e:
        out["exit_status"] = e.rc
        bench.failed = True
    acct = limited.proxy.last.get("budget", {})
    out.update({k: v for k, v in acct.items() if k != "refusals"})
    # Only the keys refused more than once: the full list is long.
    out["refused_repeatedly"] = {k: v for k, v in acct.get("refusals", {}).items() if len(v) > 1}
    if res is not None:
        out.update({
            "exit_status": res.sample.rc,
            "wall_s": res.sample.wall_s,
            "cpu_s": res.sample.user_s + res.sample.sys_s,
            "peak_rss_mib": res.sample.maxrss_kib / 1024,
            "requests_both": res.traffic["requests"],
            "inflight_mean": res.traffic["inflight_mean"],
            "inflight_max": res.traffic["inflight_max"],
            "source_inflight_mean": res.traffic["source_inflight_mean"],
            "source_inflight_max": res.traffic["source_inflight_max"],
            "problems": list(res.problems),
            "imgsync_quota": (res.report or {}).get("quota"),
        })
    errors = [p for p in out.get("problems", []) if p.startswith("error")]
    verdict = {
        "completed": out.get("exit_status") == 0 and not errors,
        "refused_at_most_once_per_window": acct.get("max_refusals_of_a_key_in_a_window", 0) <= MAX_REFUSALS_PER_WINDOW,
        "share_429_after_first_window_below_5pct": acct.get("refused_share_after_first_window", 0.0) < MAX_429_SHARE,
    }
    out["targets"] = verdict
    out["pass"] = all(verdict.values())
    if not out["pass"]:
        bench.failed = True
    log(f"  budget: {acct.get('refused', '?')} refused of {acct.get('requests', '?')} source requests over"
        f" {acct.get('windows', '?')} windows; {'pass' if out['pass'] else 'FAIL'}")
    bench.budget = out
    bench.registries.stop(limited)
    bench.registries.stop(dst)


def print_budget(b: dict[str, Any]) -> None:
    if not b:
        return
    print(f"\nimgsync cold sync through a source budget of {b['limit']} requests per {b['window_s']:g} s window"
          " (every request counts; 429 + Retry-After to the window's end; imgsync only):")
    if "wall_s" in b:
        print(f"  wall {b['wall_s']:.3f} s, cpu {b['cpu_s']:.3f} s, {b['peak_rss_mib']:.1f} MiB RSS;"
              f" {b['requests_both']} requests at source and target;"
              f" in flight {b['inflight_mean']:.1f} mean / {b['inflight_max']} max"
              f" (source alone {b['source_inflight_mean']:.1f} / {b['source_inflight_max']})")
    else:
        print(f"  the run failed with exit status {b.get('exit_status')}")
    if "windows" in b:
        share = b["refused_share_after_first_window"] * 100
        print(f"  429s: {b['refused']} of {b['requests']} source requests over {b['windows']} windows;"
              f" after the first window {b['refused_after_first_window']} of {b['requests_after_first_window']}"
              f" = {share:.1f} %; {b['keys_refused']} requests refused, at most"
              f" {b['max_refusals_of_a_key_in_a_window']} times in one window"
              + (f" ({b['key_refused_most_in_a_window']})" if b["max_refusals_of_a_key_in_a_window"] > 1 else "")
              + f"; refused again sooner than its Retry-After: {b['refused_again_before_retry_after']}")
        print("  requests per window: " + " ".join(map(str, b["requests_per_window"])))
        print("  429s per window:     " + " ".join(map(str, b["refused_per_window"])))
    t = b["targets"]
    marks = {True: "pass", False: "FAIL"}
    print(f"  targets: completes and verified {marks[t['completed']]}; no request refused twice in a window"
          f" {marks[t['refused_at_most_once_per_window']]}; 429s after the first window < 5 %"
          f" {marks[t['share_429_after_first_window_below_5pct']]}")
    for p in b.get("problems", []):
        print(f"  budget: {p}")
