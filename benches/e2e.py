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
  4. verifies the last output of every tool (index/manifest/config/blob
     digests and sizes, tag, rootfs.diff_ids, uncompressed layer digests),
  5. prints a table and optionally writes JSON.

Usage (from the project root):
    benches/e2e.py                          # 300 MiB image, 3 runs, both tools
    benches/e2e.py --size-mb 50 --runs 1 --tools skopeo
    benches/e2e.py --scenarios a,b --images big --json bench.json
    benches/e2e.py --inputs ~/.cache/imgsync-e2e   # reuse generated inputs
    benches/e2e.py --keep --workdir /var/tmp       # keep work dir for inspection

The imgsync binary defaults to target/release/imgsync under the project root;
it is built with `cargo build --release` when missing (--build always
rebuilds, --no-build never builds).

Measurements
  wall     perf_counter() around the complete process lifetime; the best
           (minimum) of the timed runs is reported, the median is in JSON.
  RSS      ru_maxrss (KiB on Linux) from os.wait4() on exactly the measured
           process.  Linux folds the high-water mark of the address space a
           process had before exec() into its ru_maxrss, so a child spawned
           directly from this (much larger) Python process would report
           >= ~10 MiB even for /bin/true.  By default (--rss-method reaper)
           the harness therefore registers itself as child subreaper and
           starts the tool from a tiny `/bin/sh` that backgrounds it and
           exits; the orphaned tool is re-parented to the harness, which
           reaps it with wait4(pid).  The remaining floor (what /bin/true
           reports, typically < 1.5 MiB) is printed in the header.
           --rss-method direct uses plain Popen + wait4 instead.
  output   apparent size in bytes of the destination (file size, or the sum
           of all file sizes below a directory).
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
import ctypes
import dataclasses
import glob
import gzip
import hashlib
import json
import os
import platform
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 1
FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
MIB = 1024 * 1024
OCI_SRC_TAG = "t"
DEST_OCI_TAG = "t"
TINY_LAYERS = 25

# Layers of the "big" image: (description, source roots (globs), share of size).
BIG_LAYERS = [
    ("shared libraries", ["/usr/lib/*-linux-gnu"], 0.40),
    ("shared data", ["/usr/share"], 0.25),
    ("executables", ["/usr/bin", "/usr/sbin"], 0.15),
    ("python runtime", ["/usr/lib/python3*"], 0.12),
    ("headers and extras", ["/usr/include", "/usr/libexec", "/usr/local"], 0.08),
]
# Walked (skipping files already used) when a layer's own roots run dry.
FALLBACK_ROOTS = ["/usr"]

IMAGES = {
    "big": "bench/big:1",
    "tiny": "bench/tiny:1",
}

SCENARIOS = {
    "a": "docker-archive -> oci (uncompressed)",
    "b": "docker-archive -> oci (gzip)",
    "c": "oci (gzip) -> docker-archive",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failed command or an invalid output."""


class CommandFailed(BenchError):
    def __init__(self, cmd: list[str], rc: int, stderr: str):
        self.cmd, self.rc, self.stderr = cmd, rc, stderr
        super().__init__(f"command failed with exit status {rc}: {shell_join(cmd)}")


def shell_join(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


# --------------------------------------------------------------------------
# Image generation
# --------------------------------------------------------------------------


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
        import io

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


def build_big_layers(build_dir: Path, size_mb: int) -> list[BuiltLayer]:
    total = size_mb * MIB
    used: set[str] = set()
    layers = []
    for i, (desc, patterns, share) in enumerate(BIG_LAYERS):
        roots = expand_roots(patterns)
        budget = int(total * share)
        path = build_dir / f"layer{i}.tar"
        lb = LayerBuilder(path)
        t0 = time.perf_counter()
        fill_layer_from_host(lb, roots, budget, used)
        if budget - lb.size > 1 * MIB:
            fill_layer_from_host(lb, FALLBACK_ROOTS, budget, used)
        diff_id, size = lb.close()
        shown = " ".join(roots) if roots else "(fallback)"
        log(
            f"  layer {i}: {size / MIB:7.1f} MiB, {lb.files:6d} entries from {shown}"
            f" ({time.perf_counter() - t0:.1f}s)"
        )
        if size < budget * 0.5:
            log(f"  warning: layer {i} is much smaller than requested ({budget / MIB:.1f} MiB): /usr is too small")
        layers.append(BuiltLayer(path, diff_id, size, lb.files, f"/bin/sh -c #(nop) COPY dir:{shown} in / # {desc}"))
    return layers


def build_tiny_layers(build_dir: Path) -> list[BuiltLayer]:
    layers = []
    for i in range(TINY_LAYERS):
        path = build_dir / f"layer{i}.tar"
        lb = LayerBuilder(path)
        base = f"srv/tiny/layer-{i:02d}"
        lb.ensure_parents(base + "/x", host_root=None)
        lb.add_dir(base, 0o755)
        lb.add_bytes(f"{base}/README.txt", (f"tiny benchmark layer {i}\n" * (3 + i)).encode())
        lb.add_bytes(f"{base}/settings.conf", "".join(f"key{k} = value-{i}-{k}\n" for k in range(8)).encode())
        lb.ensure_parents("etc/tiny.d/x", host_root=None)
        lb.add_bytes(f"etc/tiny.d/{i:02d}.conf", f"layer={i}\nenabled=true\n".encode())
        diff_id, size = lb.close()
        layers.append(BuiltLayer(path, diff_id, size, lb.files, f"/bin/sh -c echo layer {i} > /srv/tiny/layer-{i:02d}/README.txt"))
    return layers


def write_docker_archive(out: Path, tag: str, layers: list[BuiltLayer]) -> dict[str, Any]:
    """Writes a legacy `docker save` archive; returns metadata about it."""
    import io

    history = [{"created": CREATED, "created_by": l.created_by, "comment": "imgsync e2e benchmark"} for l in layers]
    history.append({"created": CREATED, "created_by": '/bin/sh -c #(nop)  CMD ["/bin/sh"]', "empty_layer": True})
    container_cfg = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/",
        "Labels": {"org.opencontainers.image.title": tag},
    }
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": container_cfg,
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
        "history": history,
    }
    cfg_bytes = json.dumps(config, separators=(",", ":")).encode()
    cfg_hex = hashlib.sha256(cfg_bytes).hexdigest()

    def info(name: str, typ: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.size, ti.mode, ti.mtime = typ, size, mode, FIXED_MTIME
        ti.uid = ti.gid = 0
        return ti

    def add_bytes(t: tarfile.TarFile, name: str, data: bytes) -> None:
        t.addfile(info(name, size=len(data)), io.BytesIO(data))

    layer_paths, parent = [], ""
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as t:
        for i, l in enumerate(layers):
            v1_id = hashlib.sha256(f"{parent}\n{l.diff_id}".encode()).hexdigest()
            v1 = {"id": v1_id, "created": CREATED, "container_config": {"Cmd": [l.created_by]}, "os": "linux"}
            if parent:
                v1["parent"] = parent
            if i == len(layers) - 1:
                v1["config"] = container_cfg
                v1["architecture"] = "amd64"
            t.addfile(info(v1_id, tarfile.DIRTYPE, mode=0o755))
            add_bytes(t, f"{v1_id}/VERSION", b"1.0")
            add_bytes(t, f"{v1_id}/json", json.dumps(v1, separators=(",", ":")).encode())
            with open(l.path, "rb") as f:
                t.addfile(info(f"{v1_id}/layer.tar", size=l.size), f)
            layer_paths.append(f"{v1_id}/layer.tar")
            parent = v1_id
        add_bytes(t, f"{cfg_hex}.json", cfg_bytes)
        manifest = [{"Config": f"{cfg_hex}.json", "RepoTags": [tag], "Layers": layer_paths}]
        add_bytes(t, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        repo, _, ver = tag.rpartition(":")
        add_bytes(t, "repositories", json.dumps({repo: {ver: parent}}, separators=(",", ":")).encode() + b"\n")
    tmp.rename(out)
    return {
        "tag": tag,
        "archive": out.name,
        "archive_bytes": out.stat().st_size,
        "config_digest": "sha256:" + cfg_hex,
        "diff_ids": [l.diff_id for l in layers],
        "layer_bytes": [l.size for l in layers],
        "layer_entries": [l.files for l in layers],
    }


def generate_inputs(inputs: Path, size_mb: int, skopeo: str | None, imgsync: Path | None, images: list[str]) -> dict:
    """Creates (or reuses) the docker archives and OCI layouts in `inputs`."""
    stamp_path = inputs / "inputs.json"
    wanted = {"generator": GENERATOR_VERSION, "size_mb": size_mb}
    stamp: dict[str, Any] = {}
    if stamp_path.exists():
        try:
            stamp = json.loads(stamp_path.read_text())
        except ValueError:
            stamp = {}
        if {k: stamp.get(k) for k in wanted} != wanted:
            stamp = {}
    stamp.update(wanted)
    stamp.setdefault("images", {})
    inputs.mkdir(parents=True, exist_ok=True)

    for name in images:
        meta = stamp["images"].get(name)
        archive = inputs / f"{name}.tar"
        oci_dir = inputs / f"oci-{name}"
        if meta and archive.exists() and archive.stat().st_size == meta["archive_bytes"]:
            log(f"reusing {archive}")
        else:
            if oci_dir.exists():
                shutil.rmtree(oci_dir)
            build_dir = inputs / f".build-{name}"
            shutil.rmtree(build_dir, ignore_errors=True)
            build_dir.mkdir()
            t0 = time.perf_counter()
            log(f"generating {name} image {IMAGES[name]} ...")
            layers = build_big_layers(build_dir, size_mb) if name == "big" else build_tiny_layers(build_dir)
            meta = write_docker_archive(archive, IMAGES[name], layers)
            shutil.rmtree(build_dir)
            log(
                f"  wrote {archive} ({meta['archive_bytes'] / MIB:.1f} MiB, {len(layers)} layers)"
                f" in {time.perf_counter() - t0:.1f}s"
            )
            stamp["images"][name] = meta
            stamp_path.write_text(json.dumps(stamp, indent=2))
        if skopeo:  # independent reader check of the generated archive
            out = check_output([skopeo, "inspect", f"docker-archive:{archive}"])
            n = len(json.loads(out).get("Layers") or [])
            if n != len(meta["diff_ids"]):
                raise BenchError(f"skopeo inspect sees {n} layers in {archive}, expected {len(meta['diff_ids'])}")

        if not meta.get("oci_layout") or not (oci_dir / "index.json").exists():
            shutil.rmtree(oci_dir, ignore_errors=True)
            src, dst = f"docker-archive:{archive}", f"oci:{oci_dir}:{OCI_SRC_TAG}"
            if skopeo:
                cmd = [skopeo, "copy", "-q", src, dst]
            elif imgsync:
                cmd = [str(imgsync), "copy", "-q", "--dest-compress", "gzip", src, dst]
            else:
                raise BenchError("need skopeo or imgsync to prepare the OCI input layouts")
            log(f"preparing gzip OCI layout {oci_dir.name} ...")
            t0 = time.perf_counter()
            check_output(cmd)
            problems = verify_oci(oci_dir, OCI_SRC_TAG, meta["diff_ids"], "gzip")
            errs = [p for p in problems if p.startswith("error")]
            if errs:
                raise BenchError(f"prepared OCI layout {oci_dir} is invalid: {'; '.join(errs)}")
            log(f"  done in {time.perf_counter() - t0:.1f}s ({dir_bytes(oci_dir) / MIB:.1f} MiB)")
            meta["oci_layout"] = oci_dir.name
            stamp_path.write_text(json.dumps(stamp, indent=2))
    os.sync()
    return stamp


# --------------------------------------------------------------------------
# Output verification
# --------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff_compression(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head == ZSTD_MAGIC:
        return "zstd"
    return "none"


def media_type_compression(mt: str) -> str:
    if mt.endswith("gzip"):
        return "gzip"
    if mt.endswith("zstd"):
        return "zstd"
    return "none"


def sha256_file(path: Path, decompress_gzip: bool = False) -> str:
    h = hashlib.sha256()
    opener = gzip.open if decompress_gzip else open
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def group_layer_problems(problems: list[str], per_layer: dict[str, list[int]], total: int) -> list[str]:
    """Folds identical per-layer messages into one line listing the layers."""
    for msg, idx in per_layer.items():
        level, _, text = msg.partition(": ")
        shown = ",".join(map(str, idx[:8])) + (",..." if len(idx) > 8 else "")
        problems.append(f"{level}: {len(idx)}/{total} layers ({shown}): {text}")
    return problems


def normalize_ref(ref: str) -> str:
    """Docker reference normalization: bench/big:1 -> docker.io/bench/big:1."""
    first, sep, rest = ref.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        ref = "docker.io/" + ref
        if not sep:
            ref = "docker.io/library/" + ref.removeprefix("docker.io/")
    return ref


def verify_oci(layout: Path, tag: str, diff_ids: list[str], expect_compression: str) -> list[str]:
    """Returns a list of problems ("error: ..." or "warning: ...").

    Compression is determined from the blob's magic bytes, not from the media
    type: skopeo (containers/image) labels uncompressed layers read from a
    docker-archive as tar+gzip, which is reported as a warning.
    """
    problems: list[str] = []
    per_layer: dict[str, list[int]] = {}

    def layer_problem(msg: str, i: int) -> None:
        per_layer.setdefault(msg, []).append(i)

    def blob(desc: dict, what: str) -> Path | None:
        algo, _, hexd = desc.get("digest", "").partition(":")
        p = layout / "blobs" / algo / hexd
        if not p.is_file():
            problems.append(f"error: {what} blob {desc.get('digest')} missing")
            return None
        if p.stat().st_size != desc.get("size"):
            problems.append(f"error: {what} blob size {p.stat().st_size} != descriptor size {desc.get('size')}")
        if sha256_file(p) != desc["digest"]:
            problems.append(f"error: {what} blob content does not match digest {desc['digest']}")
        return p

    try:
        layout_file = json.loads((layout / "oci-layout").read_text())
        if layout_file.get("imageLayoutVersion") != "1.0.0":
            problems.append("error: oci-layout imageLayoutVersion is not 1.0.0")
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as e:
        return [f"error: unreadable layout: {e}"]
    descs = [
        d for d in index.get("manifests", [])
        if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag
    ]
    if len(descs) != 1:
        return problems + [f"error: index.json has {len(descs)} manifests tagged {tag!r}"]
    mpath = blob(descs[0], "manifest")
    if mpath is None:
        return problems
    manifest = json.loads(mpath.read_bytes())
    cpath = blob(manifest.get("config", {}), "config")
    if cpath is not None:
        config = json.loads(cpath.read_bytes())
        if config.get("rootfs", {}).get("diff_ids") != diff_ids:
            problems.append("error: config rootfs.diff_ids differ from the source image")
    layers = manifest.get("layers", [])
    if len(layers) != len(diff_ids):
        return problems + [f"error: manifest has {len(layers)} layers, expected {len(diff_ids)}"]
    for i, (desc, diff_id) in enumerate(zip(layers, diff_ids)):
        p = blob(desc, f"layer {i}")
        if p is None:
            continue
        actual = sniff_compression(p)
        declared = media_type_compression(desc.get("mediaType", ""))
        if actual != declared:
            layer_problem(f"warning: mediaType {desc.get('mediaType')} but blob compression is {actual}", i)
        if actual != expect_compression:
            layer_problem(f"warning: blob compression is {actual}, expected {expect_compression}", i)
        if actual == "zstd":
            continue  # no zstd decoder in the standard library
        if sha256_file(p, decompress_gzip=actual == "gzip") != diff_id:
            layer_problem("error: uncompressed digest differs from the config's diff_id", i)
    return group_layer_problems(problems, per_layer, len(diff_ids))


def verify_docker_archive(path: Path, tag: str, diff_ids: list[str]) -> list[str]:
    problems: list[str] = []
    per_layer: dict[str, list[int]] = {}
    try:
        with tarfile.open(path, "r:") as t:
            manifest = json.load(t.extractfile("manifest.json"))
            want = normalize_ref(tag)
            entries = [m for m in manifest if want in map(normalize_ref, m.get("RepoTags") or [])]
            if len(entries) != 1:
                return [f"error: manifest.json has {len(entries)} entries tagged {tag!r}"]
            entry = entries[0]
            config = json.load(t.extractfile(entry["Config"]))
            if config.get("rootfs", {}).get("diff_ids") != diff_ids:
                problems.append("error: config rootfs.diff_ids differ from the source image")
            if len(entry.get("Layers", [])) != len(diff_ids):
                return problems + [f"error: {len(entry.get('Layers', []))} layers, expected {len(diff_ids)}"]
            for i, (name, diff_id) in enumerate(zip(entry["Layers"], diff_ids)):
                f = t.extractfile(name)
                if f is None:
                    per_layer.setdefault("error: layer entry is not a file", []).append(i)
                    continue
                with f:
                    head = f.read(4)
                    rest = f.read()
                data = head + rest
                # docker load decompresses gzip layers itself, so a layer kept
                # gzip-compressed (as it came) is fine; zstd needs Docker 23+.
                if head == ZSTD_MAGIC:
                    per_layer.setdefault("warning: layer is zstd (docker load needs Docker 23+)", []).append(i)
                    continue
                if head.startswith(GZIP_MAGIC):
                    data = gzip.decompress(data)
                if "sha256:" + hashlib.sha256(data).hexdigest() != diff_id:
                    per_layer.setdefault("error: uncompressed layer digest differs from the config's diff_id", []).append(i)
    except (OSError, KeyError, ValueError, tarfile.TarError) as e:
        problems.append(f"error: unreadable archive: {e}")
    return group_layer_problems(problems, per_layer, len(diff_ids))


# --------------------------------------------------------------------------
# Process measurement
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    wall_s: float
    maxrss_kib: int
    user_s: float
    sys_s: float
    rc: int


def set_child_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        z = ctypes.c_ulong(0)
        return libc.prctl(ctypes.c_int(PR_SET_CHILD_SUBREAPER), ctypes.c_ulong(1), z, z, z) == 0
    except (OSError, AttributeError):
        return False


class Runner:
    # Backgrounds the command (stdin from /dev/null, stdout/stderr to files),
    # prints its pid and exits, so the command's parent is a tiny shell rather
    # than this interpreter.
    LAUNCH = 'o=$1; e=$2; shift 2; "$@" </dev/null >"$o" 2>"$e" & echo $!'

    def __init__(self, method: str, logdir: Path):
        self.logdir = logdir
        self.reaper = False
        if method in ("auto", "reaper"):
            self.reaper = set_child_subreaper()
            if not self.reaper and method == "reaper":
                raise BenchError("could not become child subreaper (prctl failed); use --rss-method direct")
        self.method = "reaper" if self.reaper else "direct"
        self.sh = "/bin/sh"
        self.current_pid: int | None = None

    def run(self, cmd: list[str]) -> tuple[Sample, str]:
        out_path, err_path = self.logdir / "stdout.log", self.logdir / "stderr.log"
        if self.reaper:
            t0 = time.perf_counter()
            sh = subprocess.Popen(
                [self.sh, "-c", self.LAUNCH, "sh", str(out_path), str(err_path), *cmd],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            )
            pid_line, _ = sh.communicate()
            if sh.returncode != 0 or not pid_line.strip().isdigit():
                raise BenchError(f"launcher failed (status {sh.returncode}) for {shell_join(cmd)}")
            pid = int(pid_line)
        else:
            with open(out_path, "wb") as o, open(err_path, "wb") as e:
                t0 = time.perf_counter()
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
            pid = p.pid
        self.current_pid = pid
        try:
            _, status, ru = os.wait4(pid, 0)
        except ChildProcessError:
            raise BenchError(f"lost track of process {pid}; try --rss-method direct") from None
        t1 = time.perf_counter()
        self.current_pid = None
        if not self.reaper:
            p.returncode = os.waitstatus_to_exitcode(status)
        rc = os.waitstatus_to_exitcode(status)
        stderr = err_path.read_text(errors="replace")
        return Sample(t1 - t0, ru.ru_maxrss, ru.ru_utime, ru.ru_stime, rc), stderr

    def kill_current(self) -> None:
        pid = self.current_pid
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            for _ in range(50):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        return
                except ChildProcessError:
                    return
                time.sleep(0.1)


def check_output(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        raise CommandFailed(cmd, p.returncode, p.stderr)
    return p.stdout


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    scenario: str
    image: str
    tool: str
    cmd: list[str]
    dest: Path
    verify: Any  # callable returning list of problems
    samples: list[Sample] = dataclasses.field(default_factory=list)
    output_bytes: int | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    verified: bool = False
    error: str | None = None


def make_cases(scenario: str, image: str, tools: dict[str, str], inputs: Path, outdir: Path, meta: dict) -> list[Case]:
    tag = IMAGES[image]
    archive = inputs / f"{image}.tar"
    oci_src = inputs / f"oci-{image}"
    diff_ids = meta["diff_ids"]
    cases = []
    for tool, exe in tools.items():
        base = outdir / f"{scenario}-{image}-{tool}"
        if scenario in ("a", "b"):
            dest = base
            src_ref, dst_ref = f"docker-archive:{archive}", f"oci:{dest}:{DEST_OCI_TAG}"
            compression = "none" if scenario == "a" else "gzip"
            if tool == "imgsync":
                flags = [] if scenario == "a" else ["--dest-compress", "gzip"]
                cmd = [exe, "copy", "-q", *flags, src_ref, dst_ref]
            else:
                flags = (
                    ["--dest-oci-accept-uncompressed-layers"] if scenario == "a"
                    else ["--dest-compress", "--dest-compress-format", "gzip"]
                )
                cmd = [exe, "copy", "-q", *flags, src_ref, dst_ref]
            verify = (lambda d=dest, c=compression: verify_oci(d, DEST_OCI_TAG, diff_ids, c))
        else:
            dest = base.with_suffix(".tar")
            src_ref, dst_ref = f"oci:{oci_src}:{OCI_SRC_TAG}", f"docker-archive:{dest}:{tag}"
            cmd = [exe, "copy", "-q", src_ref, dst_ref]
            verify = (lambda d=dest: verify_docker_archive(d, tag, diff_ids))
        cases.append(Case(scenario, image, tool, cmd, dest, verify))
    return cases


def run_case_once(runner: Runner, case: Case) -> Sample:
    remove_path(case.dest)
    os.sync()
    sample, stderr = runner.run(case.cmd)
    if sample.rc != 0:
        raise CommandFailed(case.cmd, sample.rc, stderr)
    return sample


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
                log(
                    f"  {case.tool:8s} run {r + 1}/{runs}: {case.samples[-1].wall_s:8.3f} s"
                    f"  {case.samples[-1].maxrss_kib / 1024:7.1f} MiB"
                )
    for case in live:
        case.output_bytes = dir_bytes(case.dest)
        if verify:
            case.problems = case.verify()
            case.verified = True
            for p in case.problems:
                log(f"  {case.tool}: {p}")
        remove_path(case.dest)
    if failure:
        raise failure


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
        }
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
    head = ["scenario", "image", "tool", "best wall s", "cpu s", "peak RSS MiB", "output MiB", "skopeo/imgsync", "check"]
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
        table.append([
            f"{r['scenario']} {r['scenario_name']}",
            r["image"],
            r["tool"],
            f(r["best_wall_s"], ".3f"),
            f(r["best_cpu_s"], ".3f"),
            f(r["peak_rss_mib"], ".1f"),
            f(r["output_mib"], ".1f"),
            "" if ratio is None else f"{ratio:.2f}x",
            check,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    numeric = {3, 4, 5, 6, 7}
    for n, row in enumerate(table):
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
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
        fl = meta["launcher_floor"]
        parts.append(f"rss={meta['rss_method']} (floor {fl['maxrss_kib'] / 1024:.1f} MiB, {fl['wall_s'] * 1000:.1f} ms)")
    print("; ".join(parts))
    for k in ("skopeo_version", "imgsync_version"):
        if meta.get(k):
            print(f"{k.split('_')[0]}: {meta[k]}")
    print()


def tool_version(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_list(value: str, allowed: list[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
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
    ap.add_argument("--scenarios", default="a,b,c", type=lambda v: parse_list(v, list(SCENARIOS), "scenario"),
                    help="comma-separated scenarios: " + "; ".join(f"{k}={v}" for k, v in SCENARIOS.items()))
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

    tools: dict[str, str] = {}
    imgsync = Path(args.imgsync)
    if not imgsync.is_absolute():
        imgsync = PROJECT_ROOT / imgsync
    if "imgsync" in args.tools:
        if args.build or (not imgsync.exists() and not args.no_build):
            log("building imgsync: cargo build --release")
            rc = subprocess.run(["cargo", "build", "--release"], cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                log(f"cargo build --release failed with exit status {rc}")
                return 1
        if not os.access(imgsync, os.X_OK):
            log(f"imgsync binary not found or not executable: {imgsync}")
            return 1
        tools["imgsync"] = str(imgsync)
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
    all_cases: list[Case] = []
    exit_code = 0
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "imgsync": str(imgsync) if "imgsync" in tools else None,
        "imgsync_version": tool_version([tools["imgsync"], "--version"]) if "imgsync" in tools else None,
        "skopeo_version": tool_version([skopeo, "--version"]) if skopeo else None,
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
        floor = [runner.run(["/bin/true"])[0] for _ in range(5)]
        meta["rss_method"] = runner.method
        meta["launcher_floor"] = {
            "wall_s": min(s.wall_s for s in floor),
            "maxrss_kib": max(s.maxrss_kib for s in floor),
        }
        log(
            f"rss method: {runner.method}; /bin/true measures {meta['launcher_floor']['maxrss_kib'] / 1024:.1f} MiB"
            f" and {meta['launcher_floor']['wall_s'] * 1000:.1f} ms (launch overhead floor)"
        )

        for scenario in args.scenarios:
            for image in args.images:
                cases = make_cases(scenario, image, tools, inputs, outdir, stamp["images"][image])
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
