"""The shared parts of the end-to-end benchmarks in benches/.

The scenario files next to this package (e2e.py with e2e_local.py and
e2e_registry.py, sync_bench.py with sync_mirror.py, sync_scale.py and
sync_budget.py, bundle_bench.py) import what they need from these modules:

  process       launching a measured process: wall time, CPU, peak RSS
  disk          sizes of outputs, removing them, peak size of a directory
  layers        deterministic layer tars from the host's /usr
  images        the images the benchmarks copy, as `docker save` archives
  verify        checks of copied images (OCI layout, docker archive, registry)
  registry_api  a plain HTTP client for a registry (checks, seeding)
  proxy         the counting HTTP proxy both tools reach registries through
  budget        the proxy's 429 request budget and its requests-in-flight count
  registry      docker-registry instances on loopback, each behind a proxy
  copy_runs     warm-up and alternating timed runs of one copy per tool
  tables        aligned text tables and the common header lines
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
MIB = 1024 * 1024


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout holds only the results."""
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failed command or an invalid output."""
