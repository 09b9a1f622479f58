"""Kubeconfig files and a tiny HTTPS client for the test cluster (stdlib only)."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .pki import KeyPair


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: KeyPair | None = None, token: str | None = None, namespace: str = ""
) -> Path:
    """A one-context kubeconfig: a client certificate or a bearer token."""
    user: dict[str, Any] = {}
    if cert is not None:
        user = {"client-certificate": str(cert.cert), "client-key": str(cert.key)}
    if token is not None:
        user = {"token": token}
    ctx: dict[str, Any] = {"cluster": "testcluster", "user": "user"}
    if namespace:
        ctx["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testcluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "testcluster", "context": ctx}],
        "current-context": "testcluster",
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def ssl_context(ca: Path, cert: KeyPair | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def https_request(
    method: str,
    url: str,
    ca: Path,
    cert: KeyPair | None = None,
    body: Any = None,
    token: str | None = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """One request; returns (status, body). Raises OSError on connection failures."""
    u = urlsplit(url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ssl_context(ca, cert), timeout=timeout)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def https_get(url: str, ca: Path, cert: KeyPair | None = None) -> tuple[int, bytes]:
    return https_request("GET", url, ca, cert)
