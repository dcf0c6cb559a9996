"""A plain HTTP client for one loopback registry, bypassing the counting proxy.

Used for checks and for untimed seeding (manifest PUTs, blob mounts), so
none of it shows in the request counts of a measured run.
"""

from __future__ import annotations

import hashlib
import http.client
import json

from harness import BenchError

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


class RegistryClient:
    """A keep-alive HTTP client talking straight to the registry at 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float = 300):
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body).

        A failure is retried once on a new connection: the registry may have
        closed the kept-alive one while it was idle.
        """
        try:
            return self._exchange(method, path, body, headers)
        except (http.client.HTTPException, OSError):
            return self._exchange(method, path, body, headers)

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str] | None) -> tuple[int, dict[str, str], bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.close()
            raise
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def paged(self, path: str, key: str) -> list[str]:
        out: list[str] = []
        next_path: str | None = path
        while next_path:
            status, headers, body = self.request("GET", next_path)
            if status == 404 and key == "tags":
                return out
            if status != 200:
                raise BenchError(f"GET {next_path} on 127.0.0.1:{self.port} answered {status}")
            out += json.loads(body).get(key) or []
            link = headers.get("link")
            next_path = link.split(";", 1)[0].strip().strip("<>") if link else None
        return out

    def catalog(self) -> list[str]:
        return sorted(self.paged("/v2/_catalog?n=1000", "repositories"))

    def tags(self, repo: str) -> list[str]:
        return sorted(self.paged(f"/v2/{repo}/tags/list", "tags"))

    def manifest(self, repo: str, ref: str) -> tuple[str, bytes, str]:
        """(digest, bytes, media type) of a manifest."""
        status, headers, body = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                                             headers={"Accept": MANIFEST_ACCEPT})
        if status != 200:
            raise BenchError(f"GET /v2/{repo}/manifests/{ref} on 127.0.0.1:{self.port} answered {status}")
        media_type = headers.get("content-type") or json.loads(body).get("mediaType", "")
        return "sha256:" + hashlib.sha256(body).hexdigest(), body, media_type

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> None:
        status, _, resp = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body,
                                       headers={"Content-Type": media_type})
        if status != 201:
            raise BenchError(f"PUT /v2/{repo}/manifests/{ref} answered {status}: {resp[:300]!r}")

    def push_blob(self, repo: str, data: bytes) -> str:
        """Uploads a blob in one piece (POST, then PUT with the digest); its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers, resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"",
                                             headers={"Content-Length": "0"})
        if status != 202:
            raise BenchError(f"POST upload to {repo} answered {status}: {resp[:300]!r}")
        loc = headers.get("location", "")
        if "://" in loc:
            loc = loc[loc.index("/", loc.index("://") + 3):]
        sep = "&" if "?" in loc else "?"
        status, _, resp = self.request("PUT", f"{loc}{sep}digest={digest}", body=data,
                                       headers={"Content-Type": "application/octet-stream"})
        if status != 201:
            raise BenchError(f"PUT upload of {digest} to {repo} answered {status}: {resp[:300]!r}")
        return digest

    def mount(self, repo: str, digest: str, source_repo: str) -> None:
        status, _, resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source_repo}",
                                       body=b"", headers={"Content-Length": "0"})
        if status != 201:
            raise BenchError(f"mount of {digest} into {repo} answered {status}: {resp[:300]!r}")

    def snapshot(self, prefix: str) -> dict[str, dict[str, str]]:
        """repository -> tag -> manifest digest, for every repository below prefix/."""
        out: dict[str, dict[str, str]] = {}
        for repo in self.catalog():
            if repo.startswith(prefix + "/"):
                out[repo] = {tag: self.manifest(repo, tag)[0] for tag in self.tags(repo)}
        return out

    def close(self) -> None:
        if self.conn:
            self.conn.close()
            self.conn = None
