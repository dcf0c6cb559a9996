"""Warm-up and timed runs of one copy with every tool, on the same input.

Every run gets a fresh destination (the path removed, or for registry
scenarios a new registry behind a new proxy, see RunHooks), os.sync() is
called (untimed) before it so write-back of the previous output does not
leak into the measurement, and the tool order alternates between timed
repetitions.  The output of the last run of each tool is measured and
verified, then removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Protocol

from harness import log
from harness.disk import dir_bytes, remove_path
from harness.process import CommandFailed, Runner, Sample, shell_join


class RunHooks(Protocol):
    """Per-run setup and measurement of a case whose source or destination is a registry."""

    def prepare(self) -> list[str]:
        """Makes a fresh destination, zeroes the proxies; the command for this run."""

    def traffic(self) -> dict[str, Any]:
        """What the proxies counted since prepare()."""

    def output_bytes(self) -> int | None: ...

    def verify(self) -> list[str]: ...

    def cleanup(self) -> None: ...


@dataclasses.dataclass
class Case:
    scenario: str
    image: str
    tool: str
    cmd: list[str]
    dest: Path
    verify: Callable[[], list[str]]  # the problems of the last run's output
    samples: list[Sample] = dataclasses.field(default_factory=list)
    output_bytes: int | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    verified: bool = False
    error: str | None = None
    hooks: RunHooks | None = None  # registry scenarios: per-run destination and counters


def run_case_once(runner: Runner, case: Case) -> Sample:
    if case.hooks:
        case.cmd = case.hooks.prepare()
    else:
        remove_path(case.dest)
    os.sync()
    sample, stderr = runner.run(case.cmd)
    if case.hooks:
        sample.traffic = case.hooks.traffic()
        sample.requests = sample.traffic["requests"]
        if "--json" in case.cmd:
            try:
                summary = json.loads(runner.stdout_path.read_text())
                sample.self_reported_requests = summary.get("requests")
            except (OSError, ValueError, AttributeError):
                pass
    if sample.rc != 0:
        raise CommandFailed(case.cmd, sample.rc, stderr)
    return sample


def check_request_counts(case: Case) -> list[str]:
    """imgsync's own request count should be the proxies' count plus its refused HTTPS probes."""
    out = []
    for s in case.samples:
        if s.self_reported_requests is None or s.traffic is None:
            continue
        seen = s.traffic["requests"] + s.traffic["tls_refused"]
        if s.self_reported_requests != seen:
            out.append(
                f"warning: imgsync reports {s.self_reported_requests} requests, the proxies saw"
                f" {s.traffic['requests']} HTTP requests and {s.traffic['tls_refused']} HTTPS probes"
            )
    return sorted(set(out))


def run_pair(runner: Runner, cases: list[Case], runs: int, warmup: int, verify: bool) -> None:
    """Warm-up and timed runs for all tools of one (scenario, image)."""
    live = list(cases)

    def attempt(case: Case, record: bool) -> None:
        try:
            s = run_case_once(runner, case)
        except CommandFailed as e:
            case.error = f"exit status {e.rc}"
            print(f"\nFAILED ({case.tool}, scenario {case.scenario}, {case.image}): {shell_join(e.cmd)}", file=sys.stderr)
            print(f"exit status {e.rc}; stderr:\n{e.stderr.rstrip() or '(empty)'}\n", file=sys.stderr)
            live.remove(case)
            raise
        if record:
            case.samples.append(s)

    failure: CommandFailed | None = None
    for _ in range(warmup):
        for case in list(live):
            try:
                attempt(case, record=False)
            except CommandFailed as e:
                failure = failure or e
    for r in range(runs):
        order = live if r % 2 == 0 else list(reversed(live))
        for case in list(order):
            if case not in live:
                continue
            try:
                attempt(case, record=True)
            except CommandFailed as e:
                failure = failure or e
            else:
                s = case.samples[-1]
                log(
                    f"  {case.tool:8s} run {r + 1}/{runs}: {s.wall_s:8.3f} s"
                    f"  {s.maxrss_kib / 1024:7.1f} MiB"
                    + ("" if s.requests is None else f"  {s.requests:5d} requests")
                )
    for case in live:
        case.output_bytes = case.hooks.output_bytes() if case.hooks else dir_bytes(case.dest)
        if verify:
            case.problems = case.verify() + check_request_counts(case)
            case.verified = True
            for p in case.problems:
                log(f"  {case.tool}: {p}")
        if case.hooks:
            case.hooks.cleanup()
        else:
            remove_path(case.dest)
    for case in cases:
        if case.hooks and case not in live:
            case.hooks.cleanup()
    if failure:
        raise failure

