"""The Ray dashboard through the single-user server's auth (rayspawner.dashboard_proxy).

End to end on this machine: a real Ray head with token auth (its own ports and
--temp-dir, stopped by its process group only), a real jupyter_server with
jupyter-server-proxy and rayspawner's ``ray-dashboard`` entry point.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayspawner import dashboard_proxy
from rayspawner.versions import RAY_VERSION

from .hubproc import free_port, free_ports

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def free_range(n: int) -> int:
    for _ in range(200):
        base = 20000 + secrets.randbelow(9000)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, str, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):  # noqa: ANN002, ANN003
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace"), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), {k.lower(): v for k, v in e.headers.items()}


def wait_for(
    predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not ready within {timeout}s (exit={proc.poll() if proc else None})\n{tail}")


def stop_group(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process we started in its own session, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (raylet, gcs, dashboard, ...)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class RayHead:
    proc: subprocess.Popen
    dashboard_port: int
    token: str
    temp_dir: str

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    token = secrets.token_urlsafe(32)
    temp_dir = tempfile.mkdtemp(prefix="rs-dash-", dir="/tmp")  # short: Ray's socket paths are length-limited
    names = (
        "port",
        "ray-client-server-port",
        "dashboard-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "node-manager-port",
        "object-manager-port",
        "runtime-env-agent-port",
    )
    ports = dict(zip(names, free_ports(len(names))))
    workers = free_range(20)
    cmd = [
        str(RAY),
        "start",
        "--head",
        "--block",
        "--num-cpus=1",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--min-worker-port={workers}",
        f"--max-worker-port={workers + 19}",
        *(f"--{k}={v}" for k, v in ports.items()),
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    log = Path(temp_dir) / "ray-start.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(proc, ports["dashboard-port"], token, temp_dir)
    try:
        wait_for(
            lambda: http_get(f"{head.dashboard_url}/api/version", {"Authorization": f"Bearer {token}"}, 3)[0] == 200,
            120,
            "Ray dashboard",
            proc,
            log,
        )
        yield head
    finally:
        stop_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class NotebookServer:
    proc: subprocess.Popen
    url: str
    token: str
    log: Path


def start_jupyter_server(tmp: Path, env_extra: dict[str, str]) -> NotebookServer:
    port = free_port()
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JUPYTERHUB_"))}
    env.update(env_extra, JUPYTER_CONFIG_DIR=str(tmp / "jcfg"), JUPYTER_RUNTIME_DIR=str(tmp / "jrun"))
    log = tmp / "jupyter.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
    server = NotebookServer(proc, f"http://127.0.0.1:{port}", token, log)
    try:
        wait_for(
            lambda: http_get(f"{server.url}/api/status", {"Authorization": f"token {token}"}, 3)[0] == 200,
            60,
            "jupyter_server",
            proc,
            log,
        )
    except BaseException:
        stop_group(proc)
        raise
    return server


@pytest.fixture(scope="module")
def notebook_server(tmp_path_factory: pytest.TempPathFactory, ray_head: RayHead) -> Iterator[NotebookServer]:
    # one server for the module: the tests only read through it (starting one takes seconds)
    server = start_jupyter_server(
        tmp_path_factory.mktemp("nb"),
        {"RAY_DASHBOARD_URL": ray_head.dashboard_url, "RAY_AUTH_TOKEN": ray_head.token, "RAY_AUTH_MODE": "token"},
    )
    yield server
    stop_group(server.proc)


# ------------------------------------------------------------------ unit level
def test_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="jupyter_serverproxy_servers")}
    assert "ray-dashboard" in eps, "reinstall rayspawner (pip install -e .) to register its entry points"
    assert eps["ray-dashboard"].load() is dashboard_proxy.setup_ray_dashboard


def test_server_process_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_server_proxy.config import ServerProcess

    monkeypatch.setenv("RAY_DASHBOARD_URL", "http://ray-alice-head-svc.jhub.svc.cluster.local:8265")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t{o}k")
    cfg = dashboard_proxy.setup_ray_dashboard()
    sp = ServerProcess(name="ray-dashboard", **cfg)  # as jupyter-server-proxy builds it
    assert sp.launcher_entry.enabled and sp.launcher_entry.title == "Ray Dashboard"
    assert sp.launcher_entry.path_info == "ray-dashboard/"
    assert cfg["command"][-2:] == ["--target", "ray-alice-head-svc.jhub.svc.cluster.local:8265"]
    assert "t{o}k" not in " ".join(cfg["command"]), "the token must not be on a command line"
    # header values are str.format templates in jupyter-server-proxy: the token survives rendering
    assert cfg["request_headers_override"]["Authorization"].format(port=1, base_url="/") == "Bearer t{o}k"

    monkeypatch.delenv("RAY_DASHBOARD_URL")
    cfg = dashboard_proxy.setup_ray_dashboard()
    assert ServerProcess(name="ray-dashboard", **cfg).launcher_entry.enabled is False
    assert "--target" not in cfg["command"]


@pytest.mark.parametrize(
    "url,expected",
    [
        ("http://10.0.0.5:8265", ("10.0.0.5", 8265)),
        ("ray-x-head-svc.ns.svc.cluster.local:8265", ("ray-x-head-svc.ns.svc.cluster.local", 8265)),
        ("http://[::1]:8265/", ("::1", 8265)),
    ],
)
def test_parse_target(url: str, expected: tuple[str, int]) -> None:
    assert dashboard_proxy.parse_target(url) == expected


def test_parse_target_refuses_https() -> None:
    with pytest.raises(ValueError, match="http://"):
        dashboard_proxy.parse_target("https://x:8265")


# ------------------------------------------------------------------ end to end
def test_ray_head_requires_the_token(ray_head: RayHead) -> None:
    status, _, _ = http_get(f"{ray_head.dashboard_url}/api/version")
    assert status == 401, "the dashboard must refuse requests without the token (else the proxy test proves nothing)"


def test_dashboard_through_the_server_with_auth(notebook_server: NotebookServer, ray_head: RayHead) -> None:
    auth = {"Authorization": f"token {notebook_server.token}"}
    status, body, _ = http_get(f"{notebook_server.url}/ray-dashboard/api/version", auth, timeout=60)
    assert status == 200, body[:500]
    assert json.loads(body)["ray_version"] == RAY_VERSION
    # the UI itself, and the launcher entry JupyterLab shows
    status, body, _ = http_get(f"{notebook_server.url}/ray-dashboard/", auth, timeout=30)
    assert status == 200 and "<html" in body.lower()
    status, body, _ = http_get(f"{notebook_server.url}/server-proxy/servers-info", auth)
    assert status == 200, body
    info = {s["name"]: s for s in json.loads(body)["server_processes"]}
    assert info["ray-dashboard"]["launcher_entry"]["title"] == "Ray Dashboard"
    assert info["ray-dashboard"]["launcher_entry"]["enabled"] is True
    # the Ray token is never logged by the server or the relay
    assert ray_head.token not in notebook_server.log.read_text(errors="replace")


def test_dashboard_refused_without_server_auth(notebook_server: NotebookServer) -> None:
    for headers in ({}, {"Authorization": "token wrong"}, {"Authorization": "Bearer wrong"}):
        status, body, resp_headers = http_get(f"{notebook_server.url}/ray-dashboard/api/version", headers)
        assert status in (302, 403), (headers, status, body[:300])
        if status == 302:
            assert "login" in resp_headers.get("location", ""), resp_headers
        assert "ray_version" not in body


def http_post(url: str, headers: dict[str, str]) -> tuple[int, str, list[str]]:
    """POST with an empty body; (status, body, every Set-Cookie header)."""
    req = urllib.request.Request(url, data=b"", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(errors="replace"), r.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), e.headers.get_all("Set-Cookie") or []


def test_ray_login_cookie_never_reaches_the_browser(notebook_server: NotebookServer, ray_head: RayHead) -> None:
    """Ray's POST /api/authenticate sets ray-authentication-token=<token>; Path=/, which the browser
    would send to every user's server on the hub's origin. Through the proxy it is refused, in
    any spelling of the path, and no response carries that cookie."""
    direct = http_post(f"{ray_head.dashboard_url}/api/authenticate", {"Authorization": f"Bearer {ray_head.token}"})
    assert direct[0] == 200 and any(c.startswith("ray-authentication-token=") for c in direct[2]), direct
    auth = {"Authorization": f"token {notebook_server.token}"}
    for path in (
        "api/authenticate",
        "api/authenticate/",
        "api//authenticate",
        "api/%61uthenticate",
        "API/Authenticate",
    ):
        status, body, cookies = http_post(f"{notebook_server.url}/ray-dashboard/{path}", auth)
        assert status == 403 and "login is not needed" in body, (path, status, body[:300])
        assert not any("ray-authentication-token" in c for c in cookies), (path, cookies)
        assert ray_head.token not in body
    status, body, headers = http_get(f"{notebook_server.url}/ray-dashboard/api/version", auth, timeout=30)
    assert status == 200 and "ray-authentication-token" not in headers.get("set-cookie", "")


async def test_relay_drops_the_cookie_from_any_response() -> None:
    """Whatever response sets Ray's cookie (here a stand-in dashboard, after a 100 Continue), the
    relay passes everything but that header; the upstream sees one request per connection and
    none of the browser's cookies."""
    import asyncio

    seen: list[bytes] = []

    async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await r.readuntil(b"\r\n\r\n"))
        w.write(
            b"HTTP/1.1 100 Continue\r\nSet-Cookie: ray-authentication-token=early; Path=/\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nSet-Cookie: theme=dark; Path=/x\r\n"
            b"set-cookie:  Ray-Authentication-Token=secret; Path=/; HttpOnly\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        await w.drain()
        w.close()

    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = up.sockets[0].getsockname()[1]
    relay = await asyncio.start_server(
        lambda r, w: dashboard_proxy._relay(r, w, ("127.0.0.1", up_port)), "127.0.0.1", 0
    )
    r, w = await asyncio.open_connection("127.0.0.1", relay.sockets[0].getsockname()[1])
    w.write(b"GET /api/version HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nCookie: jupyterhub-user-a=s\r\n\r\n")
    await w.drain()
    response = await asyncio.wait_for(r.read(), 10)
    w.close()
    relay.close()
    up.close()
    assert (
        b"secret" not in response and b"early" not in response and b"ray-authentication-token" not in response.lower()
    )
    assert b"Set-Cookie: theme=dark; Path=/x" in response and response.endswith(b"\r\n\r\nok")
    assert b"Connection: close" in seen[0] and b"keep-alive" not in seen[0] and b"Cookie" not in seen[0]


def test_without_a_ray_cluster_the_path_explains(tmp_path: Path) -> None:
    server = start_jupyter_server(tmp_path, {})
    try:
        auth = {"Authorization": f"token {server.token}"}
        status, body, _ = http_get(f"{server.url}/ray-dashboard/api/version", auth, timeout=60)
        assert status == 503 and "no Ray cluster" in body, (status, body[:300])
        status, body, _ = http_get(f"{server.url}/server-proxy/servers-info", auth)
        info = {s["name"]: s for s in json.loads(body)["server_processes"]}
        assert info["ray-dashboard"]["launcher_entry"]["enabled"] is False
    finally:
        stop_group(server.proc)


def test_unreachable_dashboard_gives_502(tmp_path: Path) -> None:
    dead = free_port()
    server = start_jupyter_server(tmp_path, {"RAY_DASHBOARD_URL": f"http://127.0.0.1:{dead}", "RAY_AUTH_TOKEN": "x"})
    try:
        status, body, _ = http_get(
            f"{server.url}/ray-dashboard/api/version", {"Authorization": f"token {server.token}"}, 60
        )
        assert status == 502 and "not reachable" in body, (status, body[:300])
    finally:
        stop_group(server.proc)


# Through JupyterHub (local mode, a real server and cluster): tests/test_e2e_local.py
# (test_dashboard_through_the_hub_for_its_owner_only).
