"""Checks of what a tool wrote: the copy is the source image, bit for bit where it should be.

Every check returns a list of problems, "error: ..." or "warning: ...";
identical per-layer messages are folded into one line listing the layers.
Compression is determined from a blob's magic bytes, not from its media
type; zstd layers are decompressed with the `zstd` command when it is
installed (the standard library has no zstd decoder).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import Any

from harness import BenchError
from harness.registry_api import RegistryClient

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
        with RegistryClient(port) as client:
            digest, body, _ = client.manifest(repo, tag)
    except (BenchError, OSError, http.client.HTTPException) as e:
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


