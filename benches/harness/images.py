"""The images the benchmarks copy, written as legacy `docker save` archives.

e2e (generate_inputs)
  big   bench/big:1   ~--size-mb MiB of real files from /usr in 5 uncompressed layers
  tiny  bench/tiny:1  25 layers of a few small text files each
  Both also as gzip-compressed OCI layouts (the input of the OCI source
  scenarios and of the source registries).
sync and bundle
  3 shared base layers of real files (build_base_layers) and one layer of
  its own per image (build_top_layer: a few KiB; build_app_layer: ~N MiB).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from harness import MIB, BenchError, log
from harness.disk import dir_bytes
from harness.layers import FALLBACK_ROOTS, FIXED_MTIME, BuiltLayer, LayerBuilder, expand_roots, fill_layer_from_host
from harness.process import check_output
from harness.verify import verify_oci

GENERATOR_VERSION = 1
CREATED = "2024-01-01T00:00:00Z"
OCI_SRC_TAG = "t"  # the tag of the generated OCI layouts
DEST_OCI_TAG = "t"  # the tag the tools write OCI layout destinations under
TINY_LAYERS = 25

IMAGES = {
    "big": "bench/big:1",
    "tiny": "bench/tiny:1",
}

# Layers of the "big" image: (description, source roots (globs), share of size).
BIG_LAYERS = [
    ("shared libraries", ["/usr/lib/*-linux-gnu"], 0.40),
    ("shared data", ["/usr/share"], 0.25),
    ("executables", ["/usr/bin", "/usr/sbin"], 0.15),
    ("python runtime", ["/usr/lib/python3*"], 0.12),
    ("headers and extras", ["/usr/include", "/usr/libexec", "/usr/local"], 0.08),
]

# Shared base layers of the sync and bundle images: (description, source roots (globs)).
BASE_LAYERS = [
    ("base: shared libraries", ["/usr/lib/*-linux-gnu"]),
    ("base: executables", ["/usr/bin", "/usr/sbin"]),
    ("base: shared data", ["/usr/share"]),
]


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


def build_base_layers(build_dir: Path, kib: int) -> list[BuiltLayer]:
    used: set[str] = set()
    layers = []
    for i, (desc, patterns) in enumerate(BASE_LAYERS):
        budget = kib * 1024
        roots = expand_roots(patterns)
        lb = LayerBuilder(build_dir / f"base{i}.tar")
        fill_layer_from_host(lb, roots, budget, used)
        if budget - lb.size > budget // 2:
            fill_layer_from_host(lb, FALLBACK_ROOTS, budget, used)
        diff_id, size = lb.close()
        layers.append(BuiltLayer(lb.path, diff_id, size, lb.files,
                                 f"/bin/sh -c #(nop) COPY dir:{' '.join(roots)} in / # {desc}"))
        log(f"  base layer {i}: {size / MIB:.2f} MiB, {lb.files} entries ({desc})")
    return layers


def build_top_layer(build_dir: Path, name: str) -> BuiltLayer:
    """A small layer of its own for every image: a few KiB of text derived from the name."""
    path = build_dir / f"top-{name.replace('/', '_').replace(':', '_')}.tar"
    lb = LayerBuilder(path)
    lb.ensure_parents("srv/app/x", host_root=None)
    lb.add_bytes("srv/app/IMAGE", f"{name}\n".encode())
    h = hashlib.sha256(name.encode()).hexdigest()
    lines = []
    for k in range(64):
        h = hashlib.sha256(h.encode()).hexdigest()
        lines.append(f"setting_{k:02d} = {h}\n")
    lb.add_bytes("srv/app/app.conf", "".join(lines).encode())
    lb.ensure_parents("etc/app/x", host_root=None)
    lb.add_bytes("etc/app/release", f"release={name}\n".encode())
    diff_id, size = lb.close()
    return BuiltLayer(path, diff_id, size, lb.files, f"/bin/sh -c #(nop) COPY app /srv/app # {name}")


def build_app_layer(build: Path, name: str, mib: int) -> BuiltLayer:
    """A layer of its own: ~mib MiB of hex text derived from the name."""
    lb = LayerBuilder(build / f"{name.replace('/', '_').replace(':', '_')}.tar")
    lb.ensure_parents("srv/app/x", host_root=None)
    h = hashlib.sha256(name.encode()).digest()
    for k in range(mib):
        chunk = bytearray()
        while len(chunk) < MIB:
            h = hashlib.sha256(h).digest()
            chunk += h.hex().encode() + b"\n"
        lb.add_bytes(f"srv/app/data-{k:04d}.txt", bytes(chunk))
    diff_id, size = lb.close()
    return BuiltLayer(lb.path, diff_id, size, lb.files, f"COPY app /srv/app # {name}")


def write_docker_archive(out: Path, tag: str, layers: list[BuiltLayer]) -> dict[str, Any]:
    """Writes a legacy `docker save` archive; returns metadata about it."""
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


