"""The connect-mode benchmark's local-mode side: a real JupyterHub with
``jupyterhub_config/local.py`` on loopback, and code run in a user's kernel."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from tests.kernel_ws import KernelError, execute

ROOT = Path(__file__).resolve().parent.parent
#: in the environment of every process a benchmark run starts (its clean-up finds them by it)
BENCH_MARKER = "RAYSPAWNER_CONNECT_BENCH_ID"


def parse_result(out: str, tag: str = "RESULT") -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalHub:
    """A real JupyterHub with jupyterhub_config/local.py (LocalRaySpawner), loopback only."""

    def __init__(self, workdir: Path, mode: str, run_id: str) -> None:
        import requests  # noqa: F401 - fail early

        self.workdir, self.mode = workdir, mode
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.temp_root = f"/tmp/rscb{secrets.token_hex(3)}"  # short: Ray's socket paths
        self.state = workdir / "state"
        self.env = {
            **os.environ,
            BENCH_MARKER: run_id,
            "RAYSPAWNER_HUB_PORT": str(self.port),
            "RAYSPAWNER_HUB_API_PORT": str(_free_port()),
            "RAYSPAWNER_PROXY_API_PORT": str(_free_port()),
            "RAYSPAWNER_STATE_DIR": str(self.state),
            "RAYSPAWNER_TEMP_ROOT": self.temp_root,
            "RAYSPAWNER_API_TOKEN": self.token,
            "RAYSPAWNER_DEMO_PASSWORD": secrets.token_hex(8),
            "RAYSPAWNER_CONNECT_MODE": mode,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        self.log_path = workdir / "hub.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(ROOT / "jupyterhub_config" / "local.py")],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited:\n{self.log_tail()}")
            try:
                if self.api("GET", "/").status_code == 200:
                    return
            except Exception:  # noqa: BLE001
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub did not come up:\n{self.log_tail()}")
            time.sleep(0.3)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        import requests

        return requests.request(
            method,
            f"{self.url}/hub/api{path}",
            timeout=30,
            headers={"Authorization": f"token {token or self.token}"},
            **kw,
        )

    def user_token(self, name: str) -> str:
        r = self.api("POST", f"/users/{quote(name)}")
        if r.status_code not in (201, 409):
            raise RuntimeError(f"create user: {r.status_code} {r.text}")
        r = self.api("POST", f"/users/{quote(name)}/tokens", json={"note": "bench", "expires_in": 7200})
        if r.status_code != 201:
            raise RuntimeError(f"token: {r.status_code} {r.text}")
        return r.json()["token"]

    def server(self, name: str) -> dict[str, Any] | None:
        return self.api("GET", f"/users/{quote(name)}").json().get("servers", {}).get("")

    def stop_server(self, name: str, timeout: float = 150) -> float:
        t0 = time.monotonic()
        self.api("DELETE", f"/users/{quote(name)}/server")
        while self.server(name) is not None:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"server of {name} did not stop\n{self.log_tail()}")
            time.sleep(0.3)
        return time.monotonic() - t0

    def stop(self) -> int:
        """SIGTERM (cleanup_servers stops every server), then kill whatever is left of this hub."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the proxy runs in the hub's session
            except (ProcessLookupError, PermissionError):
                pass
        left = self.leftovers()
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=10)
        shutil.rmtree(self.temp_root, ignore_errors=True)
        return len(left)

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this hub: this run's marker, its Ray temp root or its state dir (HOME) in the env."""
        found, me = [], os.getpid()
        for p in psutil.process_iter(["pid"]):
            if p.pid == me:
                continue
            try:
                env = p.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if (
                env.get(BENCH_MARKER) == self.env[BENCH_MARKER]
                or env.get("RAYSPAWNER_TEMP_ROOT") == self.temp_root
                or env.get("HOME", "").startswith(str(self.state))
                or self.temp_root in " ".join(_cmdline(p))
            ):
                found.append(p)
        return found


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def run_in_kernel(
    hub: LocalHub, user: str, token: str, code: str, timeout: float = 300
) -> tuple[dict[str, Any], float]:
    """Start a kernel in the user's server, execute ``code``; (FIRST json, kernel start seconds)."""
    import requests
    import websocket

    t0 = time.monotonic()
    base = f"{hub.url}/user/{quote(user)}/api"
    r = requests.post(
        f"{base}/kernels", json={"name": "python3"}, headers={"Authorization": f"token {token}"}, timeout=60
    )
    if r.status_code != 201:
        raise RuntimeError(f"kernel start: {r.status_code} {r.text[:500]}")
    kid = r.json()["id"]
    ws = websocket.create_connection(
        base.replace("http://", "ws://") + f"/kernels/{kid}/channels",
        header=[f"Authorization: token {token}"],
        timeout=timeout,
    )
    kernel_s = time.monotonic() - t0
    try:
        try:
            out = execute(ws, user, code, timeout)
        except KernelError as e:
            raise RuntimeError(str(e)) from None
        first = parse_result(out["stdout"], "FIRST")
        if first is None:
            raise RuntimeError(f"no FIRST line: {out['stdout'][-500:]}")
        return first, kernel_s
    finally:
        ws.close()
