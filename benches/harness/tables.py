"""Text output shared by the benchmark reports: aligned tables and header lines."""

from __future__ import annotations

from typing import Any

from harness import MIB


def print_aligned(table: list[list[str]], numeric: set[int]) -> None:
    """Prints rows of cells in columns two spaces apart, a rule under the first row.

    Columns whose index is in numeric are right-aligned, the others left-aligned.
    """
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for n, row in enumerate(table):
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def floor_note(meta: dict[str, Any]) -> str:
    """The RSS method and what /bin/true measures through it (launcher_floor)."""
    fl = meta["launcher_floor"]
    return f"rss={meta['rss_method']} (floor {fl['maxrss_kib'] / 1024:.1f} MiB, {fl['wall_s'] * 1000:.1f} ms)"


def print_versions(meta: dict[str, Any], keys: tuple[str, ...]) -> None:
    """One `tool: version` line for each of keys ("<tool>_version") that meta has."""
    for k in keys:
        if meta.get(k):
            print(f"{k.split('_')[0]}: {meta[k]}")


def print_proxy_check(meta: dict[str, Any]) -> None:
    pc = meta.get("proxy_check")
    if pc:
        print(
            f"counting proxy: a {pc['blob_bytes'] / MIB:.1f} MiB blob GET takes {pc['direct_s'] * 1000:.1f} ms"
            f" directly, {pc['proxy_s'] * 1000:.1f} ms through the proxy"
        )
