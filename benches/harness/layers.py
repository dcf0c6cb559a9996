"""Deterministic layer tars from real files of this machine's /usr.

Entries get fixed metadata (mtime, uid/gid 0, root names) and are added in
byte-sorted walk order, so the same host gives the same layer digests.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Iterator

FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z
# Walked (skipping files already used) when a layer's own roots run dry.
FALLBACK_ROOTS = ["/usr"]


class HashingWriter:
    """Write-only file wrapper computing sha256 and length of what passes through."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")
        self._h = hashlib.sha256()
        self.n = 0

    def write(self, b: bytes) -> int:
        self._f.write(b)
        self._h.update(b)
        self.n += len(b)
        return len(b)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _tar_cost(name: str, size: int) -> int:
    """Approximate number of archive bytes an entry takes."""
    cost = 512 + (size + 511) // 512 * 512
    if len(name.encode("utf-8", "surrogateescape")) > 99 or not name.isascii():
        cost += 1536  # PAX extended header
    return cost


class LayerBuilder:
    """Builds one uncompressed layer tar with deterministic metadata."""

    def __init__(self, path: Path):
        self.path = path
        self.out = HashingWriter(path)
        self.tar = tarfile.open(fileobj=self.out, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()
        self.files = 0

    @property
    def size(self) -> int:
        return self.out.n

    def _info(self, name: str, typ: bytes, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = typ
        ti.mode = mode & 0o7777
        ti.mtime = FIXED_MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def ensure_parents(self, rel: str, host_root: str | None = "/") -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in self.dirs:
                continue
            mode = 0o755
            if host_root is not None:
                try:
                    st = os.lstat(os.path.join(host_root, d))
                    if stat.S_ISDIR(st.st_mode):
                        mode = st.st_mode
                except OSError:
                    pass
            self.add_dir(d, mode)

    def add_dir(self, rel: str, mode: int = 0o755) -> None:
        if rel in self.dirs:
            return
        self.dirs.add(rel)
        self.tar.addfile(self._info(rel, tarfile.DIRTYPE, mode))

    def add_symlink(self, rel: str, target: str) -> None:
        self.ensure_parents(rel)
        ti = self._info(rel, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)
        self.files += 1

    def add_fileobj(self, rel: str, f, size: int, mode: int, host_root: str | None = "/") -> None:
        self.ensure_parents(rel, host_root)
        ti = self._info(rel, tarfile.REGTYPE, mode)
        ti.size = size
        self.tar.addfile(ti, f)
        self.files += 1

    def add_bytes(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        self.add_fileobj(rel, io.BytesIO(data), len(data), mode, host_root=None)

    def close(self) -> tuple[str, int]:
        self.tar.close()
        self.out.close()
        return "sha256:" + self.out.hexdigest(), self.out.n


def walk_sorted(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Depth-first walk in byte-sorted name order; does not follow symlinks."""
    try:
        st = os.lstat(root)
    except OSError:
        return
    yield root, st
    if not stat.S_ISDIR(st.st_mode):
        return
    try:
        with os.scandir(root) as it:
            names = sorted((e.name for e in it), key=lambda n: n.encode("utf-8", "surrogateescape"))
    except OSError:
        return
    for name in names:
        yield from walk_sorted(os.path.join(root, name))


def fill_layer_from_host(lb: LayerBuilder, roots: list[str], budget: int, used: set[str]) -> None:
    """Adds regular files/symlinks below roots until the layer reaches ~budget bytes."""
    slack = 16 * 1024  # stop once less than this is left
    for root in roots:
        for path, st in walk_sorted(root):
            if budget - lb.size < slack:
                return
            if path in used or stat.S_ISDIR(st.st_mode):
                continue
            rel = path.lstrip("/")
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(path)
                except OSError:
                    continue
                if lb.size + _tar_cost(rel, 0) > budget:
                    continue
                used.add(path)
                lb.add_symlink(rel, target)
            elif stat.S_ISREG(st.st_mode):
                if lb.size + _tar_cost(rel, st.st_size) > budget:
                    continue
                try:
                    f = open(path, "rb")
                except OSError:
                    continue  # unreadable
                with f:
                    fst = os.fstat(f.fileno())
                    if not stat.S_ISREG(fst.st_mode):
                        continue
                    used.add(path)
                    lb.add_fileobj(rel, f, fst.st_size, fst.st_mode)
            # sockets, fifos and devices are skipped


def expand_roots(patterns: list[str]) -> list[str]:
    roots: list[str] = []
    for p in patterns:
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        for m in matches:
            if os.path.isdir(m) and not os.path.islink(m) and m not in roots:
                roots.append(m)
    return roots


@dataclasses.dataclass
class BuiltLayer:
    path: Path
    diff_id: str
    size: int
    files: int
    created_by: str

