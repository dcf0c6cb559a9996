"""Local scenarios of the e2e benchmark (run them with `benches/e2e.py --scenarios local`).

  a  docker-archive -> oci, layers stored uncompressed
  b  docker-archive -> oci, layers gzip-compressed
  c  oci (gzip)     -> docker-archive
"""

from __future__ import annotations

from pathlib import Path

from harness.copy_runs import Case
from harness.images import DEST_OCI_TAG, IMAGES, OCI_SRC_TAG
from harness.verify import verify_docker_archive, verify_oci

SCENARIOS = {
    "a": "docker-archive -> oci (uncompressed)",
    "b": "docker-archive -> oci (gzip)",
    "c": "oci (gzip) -> docker-archive",
}


def make_cases(scenario: str, image: str, tools: dict[str, str], inputs: Path, outdir: Path, meta: dict) -> list[Case]:
    """One case per tool: the same copy of the same input, each into its own destination."""
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

