"""The local-mode hub for end-to-end tests (registered as a pytest plugin in conftest.py).

``hub``: a real JupyterHub process with jupyterhub_config/local.py (LocalRaySpawner) on
free ports, an admin API token, a short Ray temp root; on teardown the hub is stopped
(cleanup_servers stops every server) and no Ray process of it may be left.
``create_user``, ``start_server``, ``stop_server``: REST API helpers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rayspawner.backends.local import MARKER_ROOT, find_processes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "jupyterhub_config" / "local.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    def __init__(self, url: str, token: str, proc: subprocess.Popen, log: Path, temp_root: str):
        self.url, self.token, self.proc, self.log, self.temp_root = url, token, proc, log, temp_root

    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)

    def user_api(self, user: str, token: str, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"{self.url}/user/{user}/api{path}",
                                headers={"Authorization": f"token {token}"}, timeout=30, **kw)

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture
def hub(tmp_path: Path):
    port, api_port, proxy_port = free_port(), free_port(), free_port()
    token = secrets.token_hex(16)
    temp_root = f"/tmp/rspe{secrets.token_hex(3)}"  # short: Ray's socket paths
    env = dict(os.environ)
    env.update({
        "RAYSPAWNER_HUB_PORT": str(port), "RAYSPAWNER_HUB_API_PORT": str(api_port),
        "RAYSPAWNER_PROXY_API_PORT": str(proxy_port), "RAYSPAWNER_STATE_DIR": str(tmp_path / "state"),
        "RAYSPAWNER_TEMP_ROOT": temp_root, "RAYSPAWNER_API_TOKEN": token,
        "RAYSPAWNER_DEMO_PASSWORD": "e2e-password",
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
    })
    log = tmp_path / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    h = Hub(f"http://127.0.0.1:{port}", token, proc, log, temp_root)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the hub exited:\n{h.log_tail()}"
            try:
                if h.api("GET", "/").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"the hub did not come up:\n{h.log_tail()}"
            time.sleep(0.5)
        yield h
    finally:
        proc.send_signal(signal.SIGTERM)  # cleanup_servers: the hub stops every server
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        left = find_processes(MARKER_ROOT, temp_root)
        for p in left:
            p.kill()
        shutil.rmtree(temp_root, ignore_errors=True)
        assert not left, f"Ray processes left after the hub stopped: {[p.pid for p in left]}"


def create_user(hub: Hub, name: str) -> str:
    r = hub.api("POST", f"/users/{name}")
    assert r.status_code in (201, 409), r.text
    r = hub.api("POST", f"/users/{name}/tokens", json={"note": "e2e", "expires_in": 3600})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def start_server(hub: Hub, name: str, token: str, options: dict, timeout: float = 330) -> dict:
    """Start as the user (their token) and wait until ready; returns the server model (admin view)."""
    started = time.monotonic()
    r = hub.api("POST", f"/users/{name}/server", token=token, json=options)
    assert r.status_code in (201, 202), f"{r.status_code} {r.text}\n{hub.log_tail()}"
    while True:
        model = hub.api("GET", f"/users/{name}").json()
        server = model.get("servers", {}).get("")
        if server and server.get("ready"):
            server["spawn_seconds"] = time.monotonic() - started
            return server
        if not server or (not server.get("pending") and not server.get("ready")):
            pytest.fail(f"server of {name} failed to start: {model}\n{hub.log_tail()}")
        assert time.monotonic() - started < timeout, f"server of {name} not ready in {timeout} s\n{hub.log_tail()}"
        time.sleep(1)


def stop_server(hub: Hub, name: str, timeout: float = 120) -> float:
    started = time.monotonic()
    r = hub.api("DELETE", f"/users/{name}/server")
    assert r.status_code in (202, 204), r.text
    while hub.api("GET", f"/users/{name}").json().get("servers", {}).get(""):
        assert time.monotonic() - started < timeout, f"server of {name} did not stop\n{hub.log_tail()}"
        time.sleep(0.5)
    return time.monotonic() - started
