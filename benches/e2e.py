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

Registries
  The registry scenarios use Debian's `docker-registry` (CNCF distribution,
  --registry) on 127.0.0.1, plain HTTP, filesystem storage in the work dir,
  error-level logging and no access log.  Registries are started by the
  harness and stopped when it exits (when `setpriv` is installed they also
  get SIGTERM should the harness die).
    source       one registry per image, filled once (untimed, with skopeo
                 or imgsync) from the gzip OCI layout, so it holds exactly
                 the layout's manifest, config and gzip layers.
    destination  a new, empty registry on a new port for every run (warm-up
                 and timed, every tool): nothing is skipped or mounted as
                 already present, and nothing a tool remembers about an
                 earlier destination (skopeo's blob-info cache) applies.
  skopeo gets --src-tls-verify=false / --dest-tls-verify=false; imgsync
  uses plain HTTP for loopback registries by itself.  Both tools first try
  HTTPS on each registry and fall back to HTTP.

  Every registry sits behind a small counting HTTP/1.1 proxy in this
  process (one thread per connection; keep-alive, Content-Length and
  chunked bodies, 100-continue).  Content-Length bodies move with splice(2)
  between sockets with large buffers; chunked bodies are forwarded a read
  buffer at a time, parsing only the chunk-size lines.  Both tools talk to the proxies
  only, so both pay the same small overhead; the harness measures it once
  (a large blob fetched directly and through the proxy) and prints it.
  The proxy refuses TLS: a connection whose first byte is a TLS handshake
  record is closed, which is how the HTTPS probes of both tools fail.

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
import ctypes
import dataclasses
import glob
import gzip
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
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
    "d": "docker-archive -> registry (gzip)",
    "d2": "docker-archive -> registry (zstd)",
    "e": "registry -> registry",
    "f": "registry -> oci",
    "g": "oci (gzip) -> registry",
    "h": "registry -> docker-archive",
    "i": "registry -> registry (tiny layers)",
}
LOCAL_SCENARIOS = ["a", "b", "c"]
REGISTRY_SCENARIOS = ["d", "d2", "e", "f", "g", "h", "i"]
# Scenarios that run on some images only (all others run on every image):
# e and i are the same copy, e for the big image and i for the tiny one.
SCENARIO_IMAGES = {"e": ["big"], "i": ["tiny"]}
REGISTRY_BIN = "/usr/bin/docker-registry"


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


def verify_oci(
    layout: Path, tag: str, diff_ids: list[str], expect_compression: str, expect_manifest: str | None = None
) -> list[str]:
    """Returns a list of problems ("error: ..." or "warning: ...").

    expect_manifest, when given, is the manifest digest the tag must point to.

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
    if expect_manifest and descs[0].get("digest") != expect_manifest:
        problems.append(f"error: manifest digest {descs[0].get('digest')} differs from the source's {expect_manifest}")
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


MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


class GunzipHasher:
    """sha256 of the decompressed content of a (possibly multi-member) gzip stream."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.d = zlib.decompressobj(31)

    def feed(self, data: bytes) -> None:
        while data:
            self.h.update(self.d.decompress(data))
            if not self.d.eof:
                return
            data = self.d.unused_data
            self.d = zlib.decompressobj(31)

    def hexdigest(self) -> str:
        self.h.update(self.d.flush())
        return self.h.hexdigest()


def registry_manifest(port: int, repo: str, ref: str) -> tuple[str, bytes]:
    """(digest, bytes) of the manifest a registry serves for repo:ref."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise BenchError(f"GET /v2/{repo}/manifests/{ref} on 127.0.0.1:{port} answered {r.status}")
        return "sha256:" + hashlib.sha256(body).hexdigest(), body
    finally:
        conn.close()


def verify_registry(
    port: int, repo: str, tag: str, diff_ids: list[str], expect_compression: str,
    expect_manifest: str | None = None, scratch: Path | None = None,
) -> list[str]:
    """Checks repo:tag in the registry at 127.0.0.1:port like verify_oci checks a layout.

    Talks to the registry directly (not through the counting proxy).  gzip
    layers are decompressed while they stream; zstd layers are checked with
    the `zstd` command when it is installed (spooled to `scratch`).
    """
    problems: list[str] = []
    per_layer: dict[str, list[int]] = {}
    zstd = shutil.which("zstd")
    try:
        digest, body = registry_manifest(port, repo, tag)
    except (BenchError, OSError) as e:
        return [f"error: {e}"]
    if expect_manifest and digest != expect_manifest:
        problems.append(f"error: manifest digest {digest} differs from the source's {expect_manifest}")
    try:
        manifest = json.loads(body)
    except ValueError as e:
        return problems + [f"error: manifest is not JSON: {e}"]
    if "manifests" in manifest:
        return problems + ["error: the tag points to an index, expected an image manifest"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def fetch(desc: dict, what: str, sink=None) -> bytes | None:
        """Streams a blob, checks size and digest; returns the bytes unless sink takes them."""
        conn.request("GET", f"/v2/{repo}/blobs/{desc.get('digest')}")
        r = conn.getresponse()
        if r.status != 200:
            r.read()
            problems.append(f"error: {what} blob {desc.get('digest')}: GET answered {r.status}")
            return None
        h, n, keep = hashlib.sha256(), 0, []
        while chunk := r.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
            if sink:
                sink(chunk)
            else:
                keep.append(chunk)
        if n != desc.get("size"):
            problems.append(f"error: {what} blob size {n} != descriptor size {desc.get('size')}")
        if "sha256:" + h.hexdigest() != desc.get("digest"):
            problems.append(f"error: {what} blob content does not match digest {desc.get('digest')}")
        return b"".join(keep)

    try:
        cfg = fetch(manifest.get("config", {}), "config")
        if cfg is not None:
            if json.loads(cfg).get("rootfs", {}).get("diff_ids") != diff_ids:
                problems.append("error: config rootfs.diff_ids differ from the source image")
        layers = manifest.get("layers", [])
        if len(layers) != len(diff_ids):
            return problems + [f"error: manifest has {len(layers)} layers, expected {len(diff_ids)}"]
        for i, (desc, diff_id) in enumerate(zip(layers, diff_ids)):
            state: dict[str, Any] = {"head": b"", "gunzip": None, "spool": None, "plain": hashlib.sha256()}

            def sink(chunk: bytes, st=state) -> None:
                if len(st["head"]) < 4:
                    st["head"] = (st["head"] + chunk)[:4]
                    if st["head"].startswith(GZIP_MAGIC):
                        st["gunzip"] = GunzipHasher()
                    elif st["head"] == ZSTD_MAGIC and zstd and scratch:
                        st["spool"] = open(scratch / "layer.zst", "wb")
                if st["gunzip"]:
                    st["gunzip"].feed(chunk)
                elif st["spool"]:
                    st["spool"].write(chunk)
                else:
                    st["plain"].update(chunk)

            try:
                if fetch(desc, f"layer {i}", sink) is None:
                    continue
            finally:
                if state["spool"]:
                    state["spool"].close()
            head = state["head"]
            actual = "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head == ZSTD_MAGIC else "none"
            declared = media_type_compression(desc.get("mediaType", ""))
            if actual != declared:
                per_layer.setdefault(f"warning: mediaType {desc.get('mediaType')} but blob compression is {actual}", []).append(i)
            if actual != expect_compression:
                per_layer.setdefault(f"warning: blob compression is {actual}, expected {expect_compression}", []).append(i)
            if actual == "gzip":
                got = "sha256:" + state["gunzip"].hexdigest()
            elif actual == "zstd":
                if not state["spool"]:
                    continue  # no zstd command: compressed digest and size checked only
                h = hashlib.sha256()
                with subprocess.Popen([zstd, "-dcq", str(scratch / "layer.zst")], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL) as z:
                    while chunk := z.stdout.read(1 << 20):
                        h.update(chunk)
                (scratch / "layer.zst").unlink()
                if z.returncode != 0:
                    per_layer.setdefault("error: zstd cannot decompress the layer", []).append(i)
                    continue
                got = "sha256:" + h.hexdigest()
            else:
                got = "sha256:" + state["plain"].hexdigest()
            if got != diff_id:
                per_layer.setdefault("error: uncompressed digest differs from the config's diff_id", []).append(i)
    except (OSError, ValueError, zlib.error, http.client.HTTPException) as e:
        problems.append(f"error: reading from the registry failed: {e}")
    finally:
        conn.close()
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
    # Registry scenarios only: HTTP requests through the proxies, the proxy
    # counters in detail, and imgsync's own count from its --json summary.
    requests: int | None = None
    traffic: dict | None = None
    self_reported_requests: int | None = None


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
    # than this interpreter.  The background subshell waits on a gate (the
    # launcher's stdin, as fd 3) before it execs the command; the harness
    # opens the gate (closes the pipe) only after the launcher has exited.
    # Without it a command that ends very quickly (/bin/true) can be reaped
    # by the launcher shell itself, and wait4() would find no such child.
    LAUNCH = 'o=$1; e=$2; shift 2; exec 3<&0; ( read _ <&3; exec 3<&- "$@" ) </dev/null >"$o" 2>"$e" & echo $!'

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
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            pid_line = sh.stdout.read()
            sh.stdout.close()
            sh.wait()
            sh.stdin.close()  # opens the gate: the command starts now, as our orphan
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
# Registries and the counting proxy
# --------------------------------------------------------------------------

SOCKET_BUFFER = 4 * MIB
PIPE_SIZE = 1 * MIB
RECV_SIZE = 1 * MIB
MAX_HEAD = 256 * 1024
TLS_HANDSHAKE = 0x16  # first byte of a TLS ClientHello record


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sysctl_int(name: str) -> int:
    try:
        return int(Path("/proc/sys", *name.split(".")).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def tune_socket(s: socket.socket) -> None:
    """No Nagle delay; large socket buffers where the kernel allows them.

    Setting SO_RCVBUF/SO_SNDBUF turns the kernel's buffer auto-tuning off, so
    they are set only when the limit (net.core.[rw]mem_max) admits the
    requested size, or with the *FORCE variants (root); otherwise auto-tuning
    is left alone.
    """
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt, force, limit in (
        (socket.SO_RCVBUF, 33, "net.core.rmem_max"),  # SO_RCVBUFFORCE
        (socket.SO_SNDBUF, 32, "net.core.wmem_max"),  # SO_SNDBUFFORCE
    ):
        try:
            if _sysctl_int(limit) >= SOCKET_BUFFER:
                s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            else:
                s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            pass


class _Peer:
    """One side of a proxied connection: the socket and bytes read ahead."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.pos = 0

    @property
    def avail(self) -> int:
        return len(self.buf) - self.pos

    def fill(self) -> bool:
        chunk = self.sock.recv(RECV_SIZE)
        if not chunk:
            return False
        self.buf = chunk if self.pos == len(self.buf) else self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def read_head(self) -> bytes | None:
        """The next message head including the blank line; None at a clean EOF."""
        while True:
            end = self.buf.find(b"\r\n\r\n", self.pos)
            if end >= 0:
                head = self.buf[self.pos:end + 4]
                self.pos = end + 4
                return head
            if self.avail > MAX_HEAD:
                raise OSError("message head too large")
            if not self.fill():
                if self.avail:
                    raise OSError("connection closed inside a message head")
                return None


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """(start line, headers with lower-case names; repeated ones joined by ',')."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return lines[0], headers


def _tokens(value: str | None) -> list[str]:
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


class CountingProxy:
    """HTTP/1.1 forwarding proxy in front of one registry that counts requests.

    Listens on an ephemeral 127.0.0.1 port; every accepted connection gets
    a thread and its own upstream connection (keep-alive on both sides).
    Heads are parsed; bodies (Content-Length, chunked, or until close) are
    forwarded unchanged with splice(2) through a pipe where possible, so
    payload bytes are never copied into the interpreter.  The Host header is
    kept, so the registry's upload Locations point back at the proxy.  A
    connection that starts with a TLS handshake record is closed.
    """

    splice_ok = hasattr(os, "splice")

    def __init__(self, upstream_port: int, label: str):
        self.upstream = ("127.0.0.1", upstream_port)
        self.label = label
        self.lock = threading.Lock()
        self._zero()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._accept_loop, name=f"proxy-{label}", daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _zero(self) -> None:
        self.requests = 0
        self.by_method: dict[str, int] = {}
        self.connections = 0
        self.tls_refused = 0
        self.bytes_up = 0
        self.bytes_down = 0

    def take(self) -> dict[str, Any]:
        """The counters since the last take(), which resets them."""
        with self.lock:
            out = {
                "requests": self.requests,
                "by_method": dict(sorted(self.by_method.items())),
                "connections": self.connections,
                "tls_refused": self.tls_refused,
                "bytes_to_registry": self.bytes_up,
                "bytes_from_registry": self.bytes_down,
            }
            self._zero()
        return out

    def close(self) -> None:
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- one connection ----------------------------------------------------

    def _serve(self, csock: socket.socket) -> None:
        usock: socket.socket | None = None
        pipe: tuple[int, int] | None = None
        try:
            tune_socket(csock)
            client = _Peer(csock)
            if not client.fill():
                return
            if client.buf[0] == TLS_HANDSHAKE:
                with self.lock:
                    self.tls_refused += 1
                return
            with self.lock:
                self.connections += 1
            upstream: _Peer | None = None
            while True:
                head = client.read_head()
                if head is None:
                    return
                start, headers = parse_head(head)
                method = start.split(" ", 1)[0].upper()
                with self.lock:
                    self.requests += 1
                    self.by_method[method] = self.by_method.get(method, 0) + 1
                if upstream is None:
                    usock = socket.create_connection(self.upstream)
                    tune_socket(usock)
                    upstream = _Peer(usock)
                    if self.splice_ok:
                        pipe = os.pipe()
                        try:
                            import fcntl

                            fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                        except (OSError, AttributeError):
                            pass
                if "100-continue" in _tokens(headers.get("expect")):
                    # Answered here; the registry gets the request without it.
                    csock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = b"\r\n".join(
                        l for l in head.split(b"\r\n") if not l.lower().startswith(b"expect:")
                    )
                upstream.sock.sendall(head)
                n = self._body(client, usock, headers, request=True, pipe=pipe)
                with self.lock:
                    self.bytes_up += n
                while True:
                    rhead = upstream.read_head()
                    if rhead is None:
                        return
                    status_line, rheaders = parse_head(rhead)
                    csock.sendall(rhead)
                    parts = status_line.split(" ", 2)
                    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                    if 100 <= status < 200 and status != 101:
                        continue  # interim response; the final one follows
                    break
                bodiless = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                n = 0 if bodiless else self._body(upstream, csock, rheaders, request=False, pipe=pipe)
                with self.lock:
                    self.bytes_down += max(n, 0)
                if n < 0 or "close" in _tokens(headers.get("connection")) or "close" in _tokens(rheaders.get("connection")):
                    return
                if status_line.startswith("HTTP/1.0") and "keep-alive" not in _tokens(rheaders.get("connection")):
                    return
        except (OSError, ValueError) as e:
            if not self.closed and len(self.errors) < 20:
                self.errors.append(str(e))
        finally:
            for s in (csock, usock):
                if s is not None:
                    s.close()
            if pipe:
                os.close(pipe[0])
                os.close(pipe[1])

    def _body(self, src: _Peer, dst: socket.socket, headers: dict[str, str], request: bool,
              pipe: tuple[int, int] | None) -> int:
        """Forwards one message body; returns its size, or -1 if it ended with the connection."""
        if "chunked" in _tokens(headers.get("transfer-encoding")):
            return self._chunked(src, dst, pipe)
        if "content-length" in headers:
            n = int(headers["content-length"].split(",")[0])
            self._exact(src, dst, n, pipe)
            return n
        if request:
            return 0
        # A response delimited by the end of the connection.
        while True:
            if src.avail:
                dst.sendall(memoryview(src.buf)[src.pos:])
                src.pos = len(src.buf)
            if not src.fill():
                return -1

    def _exact(self, src: _Peer, dst: socket.socket, n: int, pipe: tuple[int, int] | None) -> None:
        """Forwards exactly n bytes: read-ahead first, then splice(2) (or recv/send)."""
        k = min(n, src.avail)
        if k:
            dst.sendall(memoryview(src.buf)[src.pos:src.pos + k])
            src.pos += k
            n -= k
        while n > 0 and pipe and CountingProxy.splice_ok:
            try:
                moved = os.splice(src.fd, pipe[1], min(n, PIPE_SIZE), flags=os.SPLICE_F_MOVE)
            except OSError as e:
                if e.errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: no splice here
                    CountingProxy.splice_ok = False
                    break
                raise
            if moved == 0:
                raise OSError("connection closed inside a message body")
            n -= moved
            while moved:
                moved -= os.splice(pipe[0], dst.fileno(), moved, flags=os.SPLICE_F_MOVE)
        buf = bytearray(min(n, RECV_SIZE)) if n > 0 else None
        while n > 0:
            got = src.sock.recv_into(buf, min(n, len(buf)))
            if not got:
                raise OSError("connection closed inside a message body")
            dst.sendall(memoryview(buf)[:got])
            n -= got

    def _chunked(self, src: _Peer, dst: socket.socket, pipe: tuple[int, int] | None) -> int:
        """Forwards a chunked body as it is, finding its end from the chunk sizes.

        Whole read-ahead buffers are sent at once after skipping over the
        chunks they contain; the rest of a chunk longer than the buffer is
        spliced.
        """
        need = 0  # bytes of the current chunk (data + CRLF) not yet forwarded
        total = 0
        while True:
            buf, start, end = src.buf, src.pos, len(src.buf)
            p, done = start, False
            while p < end:
                if need:
                    k = min(need, end - p)
                    p += k
                    need -= k
                    continue
                eol = buf.find(b"\r\n", p, end)
                if eol < 0:
                    break
                size = int(buf[p:eol].split(b";", 1)[0].strip(), 16)  # ValueError if malformed
                if size == 0:
                    fin = buf.find(b"\r\n\r\n", eol, end)
                    if fin < 0:
                        break
                    p, done = fin + 4, True
                    break
                p, need = eol + 2, size + 2
            if p > start:
                dst.sendall(memoryview(buf)[start:p])
                total += p - start
                src.pos = p
            if done:
                return total
            if need > RECV_SIZE and not src.avail:
                self._exact(src, dst, need, pipe)
                total += need
                need = 0
                continue
            if not src.fill():
                raise OSError("connection closed inside a chunked body")


class Registry:
    """A docker-registry process on 127.0.0.1 with its own storage directory."""

    def __init__(self, binary: str, root: Path):
        self.root = root
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        self.proc: subprocess.Popen | None = None
        self.log_path = root / "registry.log"
        for attempt in range(3):
            self.port = free_port()
            config = root / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n"
            )
            cmd = [binary, "serve", str(config)]
            setpriv = shutil.which("setpriv")
            if setpriv:  # SIGTERM to the registry should the harness die
                cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
            if self._wait_ready():
                return
            self.stop()
        raise BenchError(f"{binary} did not start; see {self.log_path}:\n{self.log_path.read_text(errors='replace')[-2000:]}")

    def _wait_ready(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v2/")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def blob_bytes(self) -> int:
        """Bytes of all blobs stored (layers, configs, manifests)."""
        blobs = self.storage / "docker" / "registry" / "v2" / "blobs"
        return dir_bytes(blobs) if blobs.exists() else 0

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclasses.dataclass
class Endpoint:
    """A registry and the counting proxy in front of it."""

    registry: Registry
    proxy: CountingProxy

    @property
    def addr(self) -> str:
        return self.proxy.addr

    @property
    def direct_port(self) -> int:
        return self.registry.port

    def close(self, remove: bool = True) -> None:
        self.proxy.close()
        self.registry.stop()
        if self.proxy.errors:
            log(f"  proxy {self.proxy.label}: {len(self.proxy.errors)} connection errors, first: {self.proxy.errors[0]}")
        if remove:
            shutil.rmtree(self.registry.root, ignore_errors=True)


@dataclasses.dataclass
class SourceImage:
    endpoint: Endpoint
    repo: str
    tag: str
    digest: str  # manifest digest the source registry serves


def split_tag(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    return repo, tag


class Registries:
    """Starts, tracks and stops the registries (and proxies) of one harness run."""

    def __init__(self, binary: str, root: Path, filler: tuple[str, str]):
        self.binary = binary
        self.root = root
        self.filler = filler  # (tool, binary) that fills the source registries
        self.live: list[Endpoint] = []
        self.sources: dict[str, SourceImage] = {}
        self.proxy_check: dict[str, Any] | None = None
        self.n = 0

    def start(self, label: str) -> Endpoint:
        self.n += 1
        reg = Registry(self.binary, self.root / f"{self.n:04d}-{label}")
        ep = Endpoint(reg, CountingProxy(reg.port, label))
        self.live.append(ep)
        return ep

    def stop(self, ep: Endpoint) -> None:
        ep.close()
        if ep in self.live:
            self.live.remove(ep)

    def stop_all(self) -> None:
        for ep in list(self.live):
            self.stop(ep)

    def source(self, image: str, inputs: Path, meta: dict) -> SourceImage:
        """The source registry of an image, started and filled on first use."""
        if image in self.sources:
            return self.sources[image]
        ep = self.start(f"src-{image}")
        repo, tag = split_tag(IMAGES[image])
        layout = inputs / meta["oci_layout"]
        tool, exe = self.filler
        dst = f"127.0.0.1:{ep.direct_port}/{repo}:{tag}"
        if tool == "skopeo":
            cmd = [exe, "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:{OCI_SRC_TAG}", f"docker://{dst}"]
        else:
            cmd = [exe, "copy", "-q", f"oci:{layout}:{OCI_SRC_TAG}", dst]
        log(f"filling source registry for {image} ({IMAGES[image]}) with {tool} ...")
        t0 = time.perf_counter()
        check_output(cmd)
        digest, body = registry_manifest(ep.direct_port, repo, tag)
        index = json.loads((layout / "index.json").read_text())
        layout_digest = next(
            (d["digest"] for d in index.get("manifests", [])
             if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == OCI_SRC_TAG), None)
        if digest != layout_digest:
            log(f"  note: the source registry serves manifest {digest}, the layout has {layout_digest}")
        log(f"  done in {time.perf_counter() - t0:.1f}s ({ep.registry.blob_bytes() / MIB:.1f} MiB, manifest {digest[:19]})")
        src = SourceImage(ep, repo, tag, digest)
        self.sources[image] = src
        if self.proxy_check is None or image == "big":
            self.proxy_check = self.measure_proxy(src, body)
        return src

    def measure_proxy(self, src: SourceImage, manifest_body: bytes) -> dict[str, Any] | None:
        """Best of 5 GETs of the largest layer, directly and through the proxy."""
        layers = json.loads(manifest_body).get("layers") or []
        if not layers:
            return None
        desc = max(layers, key=lambda d: d.get("size", 0))
        path = f"/v2/{src.repo}/blobs/{desc['digest']}"

        def get(port: int) -> float:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            try:
                t0 = time.perf_counter()
                conn.request("GET", path)
                r = conn.getresponse()
                buf = bytearray(RECV_SIZE)
                n = 0
                while got := r.readinto(buf):
                    n += got
                if n != desc["size"]:
                    raise BenchError(f"GET {path} through port {port}: {n} bytes, expected {desc['size']}")
                return time.perf_counter() - t0
            finally:
                conn.close()

        direct, proxied = [], []
        for _ in range(5):
            direct.append(get(src.endpoint.direct_port))
            proxied.append(get(src.endpoint.proxy.port))
        src.endpoint.proxy.take()
        res = {"blob_bytes": desc["size"], "direct_s": min(direct), "proxy_s": min(proxied)}
        log(
            f"  proxy check: GET of a {desc['size'] / MIB:.1f} MiB blob takes {res['direct_s'] * 1000:.1f} ms directly,"
            f" {res['proxy_s'] * 1000:.1f} ms through the counting proxy"
        )
        return res


def merge_traffic(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": 0, "by_method": {}, "connections": 0, "tls_refused": 0,
                           "bytes_to_registry": 0, "bytes_from_registry": 0}
    for t in parts:
        for k, v in t.items():
            if k == "by_method":
                for m, c in v.items():
                    out["by_method"][m] = out["by_method"].get(m, 0) + c
            else:
                out[k] += v
    out["by_method"] = dict(sorted(out["by_method"].items()))
    return out


class RegistryHooks:
    """Per-run setup and measurement of a case that involves registries.

    prepare() gives every run a fresh destination (a new registry behind a
    new proxy, or a removed output path) and zeroes the source proxy's
    counters; traffic() collects what the proxies counted during the run.
    The destination of the last run stays until verify() and cleanup().
    """

    def __init__(self, registries: Registries, label: str, build_cmd, src: SourceImage | None,
                 dest_path: Path | None, verify_fn):
        self.registries = registries
        self.label = label
        self.build_cmd = build_cmd  # (src addr or None, dest addr or None) -> command
        self.src = src
        self.dest_path = dest_path  # None: the destination is a registry
        self.verify_fn = verify_fn  # (hooks) -> problems
        self.dest: Endpoint | None = None

    def _endpoints(self) -> list[Endpoint]:
        return [e for e in (self.src.endpoint if self.src else None, self.dest) if e]

    def prepare(self) -> list[str]:
        if self.dest_path is None:
            if self.dest:
                self.registries.stop(self.dest)
            self.dest = self.registries.start(self.label)
        else:
            remove_path(self.dest_path)
        for ep in self._endpoints():
            ep.proxy.take()
        return self.build_cmd(self.src.endpoint.addr if self.src else None, self.dest.addr if self.dest else None)

    def traffic(self) -> dict[str, Any]:
        return merge_traffic([ep.proxy.take() for ep in self._endpoints()])

    def output_bytes(self) -> int | None:
        if self.dest_path is not None:
            return dir_bytes(self.dest_path) if self.dest_path.exists() else None
        return self.dest.registry.blob_bytes() if self.dest else None

    def verify(self) -> list[str]:
        return self.verify_fn(self)

    def cleanup(self) -> None:
        if self.dest:
            self.registries.stop(self.dest)
            self.dest = None
        if self.dest_path is not None:
            remove_path(self.dest_path)



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
    hooks: RegistryHooks | None = None  # registry scenarios: per-run destination and counters


def make_cases(scenario: str, image: str, tools: dict[str, str], inputs: Path, outdir: Path, meta: dict,
               registries: Registries | None = None) -> list[Case]:
    if scenario in REGISTRY_SCENARIOS:
        return make_registry_cases(scenario, image, tools, inputs, outdir, meta, registries)
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


def make_registry_cases(scenario: str, image: str, tools: dict[str, str], inputs: Path, outdir: Path, meta: dict,
                        registries: Registries) -> list[Case]:
    tag = IMAGES[image]
    repo, version = split_tag(tag)
    oci_src = inputs / meta["oci_layout"]
    diff_ids = meta["diff_ids"]
    src = registries.source(image, inputs, meta) if scenario in ("e", "f", "h", "i") else None
    oci_digest = oci_manifest_digest(oci_src, OCI_SRC_TAG)
    cases = []
    for tool, exe in tools.items():
        base = outdir / f"{scenario}-{image}-{tool}"
        skopeo = tool == "skopeo"
        reg = (lambda addr: f"docker://{addr}/{repo}:{version}") if skopeo else (lambda addr: f"{addr}/{repo}:{version}")
        # imgsync's --json summary carries its own request count (cross-checked against the proxy).
        head = [exe, "copy", "-q"] + ([] if skopeo else ["--json"])
        tls = (lambda side: [f"--{side}-tls-verify=false"]) if skopeo else (lambda side: [])
        dest_path: Path | None = None
        if scenario in ("d", "d2"):
            comp = "gzip" if scenario == "d" else "zstd"
            flags = ["--dest-compress", "--dest-compress-format", comp] if skopeo else ["--dest-compress", comp]

            def build(s_addr, d_addr, flags=flags, reg=reg, head=head, tls=tls):
                return [*head, *tls("dest"), *flags, f"docker-archive:{inputs / f'{image}.tar'}", reg(d_addr)]

            def verify(h, comp=comp):
                return verify_registry(h.dest.direct_port, repo, version, diff_ids, comp, scratch=outdir)
        elif scenario in ("e", "i"):
            def build(s_addr, d_addr, reg=reg, head=head, tls=tls):
                return [*head, *tls("src"), *tls("dest"), reg(s_addr), reg(d_addr)]

            def verify(h):
                return verify_registry(h.dest.direct_port, repo, version, diff_ids, "gzip", src.digest, scratch=outdir)
        elif scenario == "g":
            def build(s_addr, d_addr, reg=reg, head=head, tls=tls):
                return [*head, *tls("dest"), f"oci:{oci_src}:{OCI_SRC_TAG}", reg(d_addr)]

            def verify(h):
                return verify_registry(h.dest.direct_port, repo, version, diff_ids, "gzip", oci_digest, scratch=outdir)
        elif scenario == "f":
            dest_path = base

            def build(s_addr, d_addr, reg=reg, head=head, tls=tls, d=base):
                return [*head, *tls("src"), reg(s_addr), f"oci:{d}:{DEST_OCI_TAG}"]

            def verify(h, d=base):
                return verify_oci(d, DEST_OCI_TAG, diff_ids, "gzip", src.digest)
        elif scenario == "h":
            dest_path = base.with_suffix(".tar")

            def build(s_addr, d_addr, reg=reg, head=head, tls=tls, d=dest_path):
                return [*head, *tls("src"), reg(s_addr), f"docker-archive:{d}:{tag}"]

            def verify(h, d=dest_path):
                return verify_docker_archive(d, tag, diff_ids)
        else:
            raise BenchError(f"unknown registry scenario {scenario}")
        hooks = RegistryHooks(registries, f"{scenario}-{image}-{tool}", build, src, dest_path, verify)
        # The command shown before the first run uses placeholders for the ephemeral proxy ports.
        cmd = build("127.0.0.1:SRCPORT", "127.0.0.1:DSTPORT")
        cases.append(Case(scenario, image, tool, cmd, dest_path or base, hooks.verify, hooks=hooks))
    return cases


def oci_manifest_digest(layout: Path, tag: str) -> str | None:
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError):
        return None
    return next(
        (d.get("digest") for d in index.get("manifests", [])
         if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag), None)


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
                summary = json.loads((runner.logdir / "stdout.log").read_text())
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
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    numeric = {3, 4, 5, 6, 7, 8}
    for n, row in enumerate(table):
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
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
        fl = meta["launcher_floor"]
        parts.append(f"rss={meta['rss_method']} (floor {fl['maxrss_kib'] / 1024:.1f} MiB, {fl['wall_s'] * 1000:.1f} ms)")
    print("; ".join(parts))
    for k in ("skopeo_version", "imgsync_version", "registry_version"):
        if meta.get(k):
            print(f"{k.split('_')[0]}: {meta[k]}")
    pc = meta.get("proxy_check")
    if pc:
        print(
            f"counting proxy: a {pc['blob_bytes'] / MIB:.1f} MiB blob GET takes {pc['direct_s'] * 1000:.1f} ms"
            f" directly, {pc['proxy_s'] * 1000:.1f} ms through the proxy"
        )
    print()


def tool_version(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


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
    registries: Registries | None = None
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

        if any(s in REGISTRY_SCENARIOS for s in args.scenarios):
            meta["registry_version"] = tool_version([registry_bin, "--version"])
            filler = ("skopeo", skopeo) if skopeo else ("imgsync", tools["imgsync"])
            registries = Registries(registry_bin, workdir / "registries", filler)

        for scenario in args.scenarios:
            if not set(args.images) & set(SCENARIO_IMAGES.get(scenario, args.images)):
                log(f"scenario {scenario} ({SCENARIOS[scenario]}) runs on image {','.join(SCENARIO_IMAGES[scenario])} only: skipped")
            for image in args.images:
                if image not in SCENARIO_IMAGES.get(scenario, [image]):
                    continue
                cases = make_cases(scenario, image, tools, inputs, outdir, stamp["images"][image], registries)
                if registries and registries.proxy_check:
                    meta["proxy_check"] = registries.proxy_check
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
