"""rayspawner.raycheck against a stand-in dashboard (real Ray: ray_auth_checks.py, run by test_e2e_kubernetes.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from rayspawner import raycheck
from rayspawner.raycheck import RayAccessError, check

TOKEN = "right-token-" + "x" * 31


class Dashboard(BaseHTTPRequestHandler):
    """Like Ray's dashboard with token auth: 401 without a token, 403 with a wrong one."""

    def do_GET(self) -> None:  # noqa: N802
        auth = self.headers.get("Authorization")
        code = 401 if not auth else 200 if auth == f"Bearer {TOKEN}" else 403
        body = json.dumps({"ray_version": "2.60.0"}).encode() if code == 200 else b"Unauthorized"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def dashboard() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_right_token(dashboard: str) -> None:
    assert check(environ={"RAY_DASHBOARD_URL": dashboard, "RAY_AUTH_TOKEN": TOKEN})["ray_version"] == "2.60.0"


def test_wrong_and_missing_token_and_no_cluster(dashboard: str) -> None:
    with pytest.raises(RayAccessError, match="rejected the token in RAY_AUTH_TOKEN \\(HTTP 403\\)") as e:
        check(environ={"RAY_DASHBOARD_URL": dashboard, "RAY_AUTH_TOKEN": "wrong-" + TOKEN})
    assert TOKEN not in str(e.value)
    with pytest.raises(RayAccessError, match="RAY_AUTH_TOKEN is not set"):
        check(environ={"RAY_API_SERVER_ADDRESS": dashboard, "RAY_AUTH_MODE": "token"})
    with pytest.raises(RayAccessError, match="No Ray cluster is attached"):
        check(environ={})


def test_unreachable_head_is_reported_at_once() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RayAccessError, match="Cannot reach the Ray head .*NetworkPolicy"):
        check(timeout=2, environ={"RAY_DASHBOARD_URL": f"http://127.0.0.1:{port}", "RAY_AUTH_TOKEN": TOKEN})


def test_cli_needs_only_the_standard_library(dashboard: str) -> None:
    """The notebook image installs rayspawner with --no-deps: raycheck must not import kubespawner etc."""
    code = (
        "import sys, rayspawner.raycheck as r; "
        "bad = [m for m in ('kubespawner', 'kubernetes_asyncio', 'traitlets', 'ray') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else r.main())"
    )
    env = {"RAY_DASHBOARD_URL": dashboard, "RAY_AUTH_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("OK: Ray 2.60.0"), done.stderr
    env["RAY_AUTH_TOKEN"] = "nope"
    done = subprocess.run(
        [sys.executable, "-m", "rayspawner.raycheck"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "rejected the token" in done.stderr and "nope" not in done.stderr
    assert raycheck.__doc__ and "30 s" in raycheck.__doc__
