"""A real JupyterHub process for tests, configured from Python snippets.

``HubProcess(config_lines, env)`` writes a jupyterhub_config.py in a temp dir
(with free ports, a sqlite db, a service token with admin scopes), starts
``jupyterhub`` as a subprocess and waits until its API answers. ``api(method,
path, body)`` calls the REST API with the service token.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SERVICE = "rayspawner-tests"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports. All are held open until all are chosen: asked one
    after another, the kernel may hand out the same port twice (a hub once got its proxy's
    API port as its own)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


class HubProcess:
    def __init__(self, config: str, env: dict[str, str] | None = None, workdir: str | None = None):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="rs-hub-"))
        self.port, self.hub_port, proxy_api_port = free_ports(3)
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.dir / "hub.log"
        base = f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.JupyterHub.db_url = "sqlite:///{self.dir}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{self.dir}/cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "{self.dir}/proxy.pid"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "{SERVICE}", "api_token": "{self.token}"}}]
c.JupyterHub.load_roles = [{{"name": "{SERVICE}", "services": ["{SERVICE}"],
    "scopes": ["read:hub", "admin:users", "admin:servers", "tokens", "access:servers", "read:metrics", "list:users"]}}]
"""
        (self.dir / "jupyterhub_config.py").write_text(base + "\n" + config)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "HubProcess":
        jupyterhub = shutil.which("jupyterhub", path=os.path.dirname(sys.executable)) or "jupyterhub"
        self.proc = subprocess.Popen(
            [jupyterhub, "-f", str(self.dir / "jupyterhub_config.py")],
            cwd=self.dir,
            env=self.env,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if self.api("GET", "/info", timeout=5)[0] == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"jupyterhub did not answer in {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + "/hub/api" + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the hub (and its proxy, same session) without any cleanup: a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        # the proxy runs in the hub's session; make sure it is gone
        try:
            if self.proc:
                os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
