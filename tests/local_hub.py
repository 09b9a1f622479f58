"""The local-mode hub for end-to-end tests (registered as a pytest plugin in conftest.py).

``hub``: a real JupyterHub process with jupyterhub_config/local.py (LocalRaySpawner) on
free ports, an admin API token, a short Ray temp root; on teardown the hub is stopped
(cleanup_servers stops every server) and no Ray process of it may be left.
``start_hub`` makes one for a module-scoped fixture (``extra_config``: lines run after
local.py, e.g. a hub service); ``Hub.kill`` (SIGKILL, a crash) and ``Hub.restart`` (same
ports, database and temp root) test recovery.
``create_user``, ``start_server``, ``stop_server``: REST API helpers (named servers too);
``cluster_processes``, ``server_processes``: what of a server still runs (by its state).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import requests

from rayspawner.backends.local import MARKER, MARKER_ROOT, find_processes
from rayspawner.local_spawner import SERVER_MARKER

from .hubproc import free_port, free_ports  # noqa: F401 - free_port: for the tests that import it from here

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "jupyterhub_config" / "local.py"


class Hub:
    def __init__(
        self,
        url: str,
        token: str,
        proc: subprocess.Popen,
        log: Path,
        temp_root: str,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
        config: Path = CONFIG,
    ):
        self.url, self.token, self.proc, self.log, self.temp_root = url, token, proc, log, temp_root
        self.env, self.workdir, self.config = env or {}, workdir, config

    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)

    def user_api(self, user: str, token: str, method: str, path: str, server: str = "", **kw) -> requests.Response:
        prefix = f"/user/{quote(user)}/{quote(server) + '/' if server else ''}"
        return requests.request(
            method, f"{self.url}{prefix}api{path}", headers={"Authorization": f"token {token}"}, timeout=30, **kw
        )

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        """SIGKILL the hub and its proxy (one session): a crash, no cleanup at all."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def restart(self) -> None:
        """Start the hub again with the same ports, database and temp root."""
        assert self.proc.poll() is not None, "the hub is still running"
        self.proc = _launch(self.env, self.workdir, self.log, self.config)
        _wait_up(self)

    def stop(self) -> list[int]:
        """SIGTERM (cleanup_servers stops every server); returns pids of Ray processes left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # cleanup_servers: the hub stops every server
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        left = find_processes(MARKER_ROOT, self.temp_root)
        for p in left:
            p.kill()
        shutil.rmtree(self.temp_root, ignore_errors=True)
        return [p.pid for p in left]


def _launch(env: dict[str, str], workdir: Path, log: Path, config: Path = CONFIG) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_up(h: Hub, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert h.proc.poll() is None, f"the hub exited:\n{h.log_tail()}"
        try:
            if h.api("GET", "/").status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"the hub did not come up:\n{h.log_tail()}"
        time.sleep(0.5)


def start_hub(workdir: Path, extra_config: str = "", **extra_env: str) -> Hub:
    """A local-mode hub on free ports with a short Ray temp root; ``extra_env`` overrides;
    ``extra_config`` is config-file text run after local.py (its ``c`` already holds local.py's
    settings, so ``c.JupyterHub.services.append(...)`` adds to them)."""
    config = CONFIG
    if extra_config:
        # load_subconfig runs local.py as its own file (its __file__ finds profiles.py)
        config = workdir / "jupyterhub_config.py"
        config.write_text(f"load_subconfig({str(CONFIG)!r})\n{extra_config}\n")
    port, api_port, proxy_port = free_ports(3)
    token = secrets.token_hex(16)
    temp_root = f"/tmp/rspe{secrets.token_hex(3)}"  # short: Ray's socket paths
    env = dict(os.environ)
    env.update(
        {
            "RAYSPAWNER_HUB_PORT": str(port),
            "RAYSPAWNER_HUB_API_PORT": str(api_port),
            "RAYSPAWNER_PROXY_API_PORT": str(proxy_port),
            "RAYSPAWNER_STATE_DIR": str(workdir / "state"),
            "RAYSPAWNER_TEMP_ROOT": temp_root,
            "RAYSPAWNER_API_TOKEN": token,
            "RAYSPAWNER_DEMO_PASSWORD": "e2e-password",
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        }
    )
    env.update(extra_env)
    log = workdir / "hub.log"
    h = Hub(f"http://127.0.0.1:{port}", token, _launch(env, workdir, log, config), log, temp_root, env, workdir, config)
    try:
        _wait_up(h)
    except BaseException:
        h.stop()
        raise
    return h


@pytest.fixture
def hub(tmp_path: Path):
    h = start_hub(tmp_path)
    try:
        yield h
    finally:
        left = h.stop()
        assert not left, f"Ray processes left after the hub stopped: {left}"


def create_user(hub: Hub, name: str) -> str:
    r = hub.api("POST", f"/users/{quote(name)}")
    assert r.status_code in (201, 409), r.text
    r = hub.api("POST", f"/users/{quote(name)}/tokens", json={"note": "e2e", "expires_in": 3600})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def _server_path(name: str, server: str = "") -> str:
    return f"/users/{quote(name)}/servers/{quote(server)}" if server else f"/users/{quote(name)}/server"


def start_server(hub: Hub, name: str, token: str, options: dict, timeout: float = 330, server: str = "") -> dict:
    """Start as the user (their token) and wait until ready; returns the server model (admin view)."""
    started = time.monotonic()
    r = hub.api("POST", _server_path(name, server), token=token, json=options)
    assert r.status_code in (201, 202), f"{r.status_code} {r.text}\n{hub.log_tail()}"
    while True:
        model = hub.api("GET", f"/users/{quote(name)}").json()
        server_model = model.get("servers", {}).get(server)
        if server_model and server_model.get("ready"):
            server_model["spawn_seconds"] = time.monotonic() - started
            return server_model
        if not server_model or (not server_model.get("pending") and not server_model.get("ready")):
            pytest.fail(f"server of {name} failed to start: {model}\n{hub.log_tail()}")
        assert time.monotonic() - started < timeout, f"server of {name} not ready in {timeout} s\n{hub.log_tail()}"
        time.sleep(1)


def stop_server(hub: Hub, name: str, timeout: float = 120, server: str = "") -> float:
    started = time.monotonic()
    r = hub.api("DELETE", _server_path(name, server))
    assert r.status_code in (202, 204), r.text
    while server in hub.api("GET", f"/users/{quote(name)}").json().get("servers", {}):
        assert time.monotonic() - started < timeout, f"server of {name} did not stop\n{hub.log_tail()}"
        time.sleep(0.5)
    return time.monotonic() - started


def cluster_processes(state: dict) -> list[psutil.Process]:
    """The live Ray processes of a server's cluster, from its stored state (admin view)."""
    cluster = state["ray_local"]
    return find_processes(MARKER, cluster["cid"], cmdline_part=cluster["temp_dir"])


def server_processes(state: dict) -> list[psutil.Process]:
    """Its Ray processes, plus the notebook server and its kernels."""
    procs = cluster_processes(state) + find_processes(SERVER_MARKER, state["server_marker"])
    if state.get("pid") and psutil.pid_exists(state["pid"]):
        procs.append(psutil.Process(state["pid"]))
    return procs


def processes_left(
    find: Callable[[], list[psutil.Process]], timeout: float, interval: float = 0.5
) -> list[psutil.Process]:
    """``find()`` once it comes back empty, or what it still finds after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left
