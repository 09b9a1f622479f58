"""The local backend: one user-server's Ray cluster as processes on the hub's machine.

Each cluster gets:

- a head (``ray start --head --block``) and ``spec.desired_workers`` local worker
  nodes (``ray start --address=127.0.0.1:<gcs> --block``), each started with
  :func:`asyncio.create_subprocess_exec` in its own session;
- a private block of :data:`NODE_PORTS` ports *per node* (GCS, client server,
  dashboard, dashboard agent, metrics, node/object manager, runtime-env agent,
  the Ray Client's per-connection servers and the worker ports), checked free
  and locked with ``flock`` so two clusters (even of two hubs) never share one;
- its own short ``--temp-dir`` (``<temp_root>/<id>``: Ray's unix socket paths
  are limited to ~107 characters);
- a random token (``RAY_AUTH_MODE=token``) that only ever travels in the
  children's environment: never on a command line, in a log, or in the state.

"Ready" means a Ray Client can connect: after ``ray start`` reports the head
up, a warm-up ``ray.init()`` runs in a subprocess with bounded retries (the
first connect to a fresh head can fail with "Starting Ray client server
failed").

Teardown: SIGTERM the node process groups, SIGKILL stragglers, and kill every
process that carries the cluster's marker (``RAYSPAWNER_CLUSTER_ID`` in its
environment, inherited by every Ray child — workers run in their own process
groups) or names its temp dir; then wait until no port of the cluster is
listening and remove the temp dir. ``ray stop`` is never used: it stops every
Ray on the machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..env import local_notebook_env
from ..errors import ClusterStartError
from ..spec import ClusterRef, RayClusterSpec
from .base import ClusterBackend, ClusterStatus
from .localproc import (  # noqa: F401 - re-exported for the spawner, the demo and tests
    MARKER,
    MARKER_ROOT,
    NODE_PORTS,
    PortBlocks,
    _CLIENT_SERVERS,
    _FIXED,
    _WORKER_PORTS,
    _pid_alive,
    find_processes,
    kill_processes,
    listening_ports,
    port_blocks,
    sweep,
)

log = logging.getLogger(__name__)

_CLIENT_PORTS_ENV = "RAYSPAWNER_CLIENT_SERVER_PORTS"
_READY_LINE = "Ray runtime started"
_FAST_FAIL = "Starting Ray client server failed"

# Injected (via PYTHONPATH, into the cluster's processes only) so that the head's
# Ray Client proxier picks per-connection server ports from this cluster's own
# block instead of the machine-wide 23000-23999 that every Ray head shares.
_SITECUSTOMIZE = '''\
import os, sys
_r = os.environ.get("RAYSPAWNER_CLIENT_SERVER_PORTS", "")
if _r:
    class _RayspawnerPorts:
        """Set ray.util.client.server.proxier's port range after it is imported."""
        def find_spec(self, name, path=None, target=None):
            if name != "ray.util.client.server.proxier":
                return None
            import importlib.machinery
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            orig = spec.loader.exec_module
            def exec_module(module, _orig=orig):
                _orig(module)
                lo, hi = (int(x) for x in _r.split("-"))
                module.MIN_SPECIFIC_SERVER_PORT, module.MAX_SPECIFIC_SERVER_PORT = lo, hi + 1
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, _RayspawnerPorts())
_here = os.path.dirname(os.path.abspath(__file__))
for _p in sys.path[1:]:
    _c = os.path.join(os.path.abspath(_p or "."), "sitecustomize.py")
    if os.path.dirname(_c) != _here and os.path.isfile(_c):
        exec(compile(open(_c).read(), _c, "exec"), {"__name__": "sitecustomize", "__file__": _c})
        break
'''

# Run as `python -c` with the notebook's env: exactly what a user's ray.init() does.
_PROBE = '''\
import json, ray
ray.init(logging_level="ERROR", log_to_driver=False)
nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
print("RAYSPAWNER_PROBE " + json.dumps({"nodes": nodes, "resources": ray.cluster_resources()}), flush=True)
ray.shutdown()
'''


# ------------------------------------------------------------------- cluster
@dataclass
class LocalNode:
    role: str  # "head" or "<group>-<i>"
    base_port: int
    num_cpus: int
    num_gpus: int = 0
    object_store_bytes: int = 0
    pid: int = 0

    def port(self, name: str) -> int:
        return self.base_port + _FIXED[name]

    @property
    def ports(self) -> list[int]:
        """Every port the node listens on by our choice (fixed services)."""
        return [self.base_port + off for off in _FIXED.values()]


@dataclass
class LocalCluster:
    """One cluster's processes and ports. ``to_state`` never contains the token."""

    name: str
    cid: str
    temp_dir: str
    temp_root: str
    nodes: list[LocalNode]
    token: str | None = field(default=None, repr=False)
    head_ready: bool = False
    failed: str | None = None
    started: float = 0.0
    ready_info: dict = field(default_factory=dict)
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict, repr=False)
    warmup: asyncio.Task | None = field(default=None, repr=False)

    @property
    def head(self) -> LocalNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[LocalNode]:
        return self.nodes[1:]

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.head.port('gcs')}"

    def notebook_env(self) -> dict[str, str]:
        return local_notebook_env(self.name, "127.0.0.1", self.head.port("client"), self.head.port("dashboard"), self.token)

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "cid": self.cid, "temp_dir": self.temp_dir, "temp_root": self.temp_root,
                "nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LocalCluster:
        return cls(state["name"], state["cid"], state["temp_dir"], state["temp_root"],
                   [LocalNode(**n) for n in state["nodes"]], head_ready=True)


def _tail(path: str, lines: int = 12) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    keep = [ln for ln in text if ln.strip()][-lines:]
    return "\n".join(keep)


def _fatal(path: str) -> str:
    """Ray's fatal line ("Check failed: ...") from a C++ log, else its tail."""
    text = _tail(path, 400)
    fatal = [ln for ln in text.splitlines() if "Check failed" in ln or "] F " in ln]
    return (fatal[-1] if fatal else "\n".join(text.splitlines()[-5:]))[-600:]


class LocalBackend(ClusterBackend):
    """Ray clusters as local process trees (see the module docstring)."""

    kind = "local"

    def __init__(
        self,
        *,
        temp_root: str = "/tmp/rsp",
        port_range: tuple[int, int] = (20000, 32700),
        ray_command: list[str] | None = None,
        python: str = sys.executable,
        warmup_attempts: int = 5,
        warmup_timeout: float = 60.0,
        extra_env: dict[str, str] | None = None,
        max_parallel_starts: int = 1,
    ):
        self.temp_root = temp_root
        self.port_range = port_range
        self.python = python
        self.ray_command = list(ray_command or [])
        if not self.ray_command:
            ray = Path(python).parent / "ray"
            self.ray_command = [str(ray)] if ray.exists() else [shutil.which("ray") or "ray"]
        self.warmup_attempts = warmup_attempts
        self.warmup_timeout = warmup_timeout
        self.extra_env = dict(extra_env or {})
        self.clusters: dict[str, LocalCluster] = {}
        # Booting heads one at a time: on a small machine two at once can miss Ray's fixed
        # registration windows (raylet 30 s, dashboard agent 15 s).
        self._starts = asyncio.Semaphore(max(1, max_parallel_starts))

    @property
    def blocks(self) -> PortBlocks:
        return port_blocks(os.path.join(self.temp_root, ".ports"), *self.port_range)

    # ------------------------------------------------------------- prepare
    async def prepare(self, spec: RayClusterSpec) -> LocalCluster:
        """Choose ports, temp dir and token (nothing runs yet). Idempotent."""
        if spec.name in self.clusters and not self.clusters[spec.name].failed:
            return self.clusters[spec.name]
        roles = [("head", spec.head)]
        for g in spec.worker_groups:
            roles += [(f"{g.name}-{i}", g.resources) for i in range(g.replicas)]
        bases = await asyncio.to_thread(self.blocks.acquire, len(roles))
        nodes = [
            LocalNode(role, base, res.ray_num_cpus, res.gpu,
                      max(78 * 2**20, int(res.memory_bytes * spec.object_store_fraction)))
            for (role, res), base in zip(roles, bases)
        ]
        cid = secrets.token_hex(4)
        cluster = LocalCluster(spec.name, cid, os.path.join(self.temp_root, cid), self.temp_root, nodes,
                               token=secrets.token_urlsafe(32) if spec.auth_enabled else None)
        os.makedirs(cluster.temp_dir, mode=0o700)
        Path(cluster.temp_dir, "site").mkdir()
        Path(cluster.temp_dir, "site", "sitecustomize.py").write_text(_SITECUSTOMIZE)
        Path(cluster.temp_dir, "cluster.json").write_text(json.dumps(cluster.to_state(), indent=1))
        self.clusters[spec.name] = cluster
        log.info("Ray cluster %s: temp dir %s, port blocks %s", spec.name, cluster.temp_dir,
                 ", ".join(f"{n.role}:{n.base_port}" for n in nodes))
        return cluster

    def adopt(self, state: dict[str, Any]) -> LocalCluster:
        """Know a cluster from the spawner's saved state (after a hub restart). No token."""
        cluster = self.clusters.get(state["name"])
        if cluster is None or cluster.cid != state.get("cid"):
            cluster = LocalCluster.from_state(state)
            self.clusters[cluster.name] = cluster
            self.blocks.adopt(n.base_port for n in cluster.nodes)
        return cluster

    def _env(self, cluster: LocalCluster, spec: RayClusterSpec | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JUPYTERHUB_"))}
        env.update(self.extra_env)
        if spec:
            env.update(spec.extra_env)
        env.update({
            MARKER: cluster.cid,
            MARKER_ROOT: cluster.temp_root,
            "RAY_USAGE_STATS_ENABLED": "0",
            # the raylet waits for the dashboard agent's port file (15 s by default): on a busy
            # machine the agent's imports alone take longer (Ray's own 30 s window still applies)
            "RAY_agent_register_timeout_ms": "60000",
            "RAY_raylet_start_wait_time_s": "60",
            "RAY_CLUSTER_NAME": cluster.name,
            _CLIENT_PORTS_ENV: f"{cluster.head.base_port + _CLIENT_SERVERS[0]}-{cluster.head.base_port + _CLIENT_SERVERS[1]}",
            "PYTHONPATH": os.pathsep.join(p for p in (os.path.join(cluster.temp_dir, "site"), env.get("PYTHONPATH")) if p),
        })
        if cluster.token:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN"] = cluster.token
        return env

    def _args(self, cluster: LocalCluster, node: LocalNode) -> list[str]:
        p = node.port
        args = [
            "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
            f"--num-cpus={node.num_cpus}", f"--num-gpus={node.num_gpus}",
            f"--object-store-memory={node.object_store_bytes}",
            f"--temp-dir={cluster.temp_dir}",
            f"--node-manager-port={p('node_manager')}", f"--object-manager-port={p('object_manager')}",
            f"--metrics-export-port={p('metrics')}", f"--runtime-env-agent-port={p('runtime_env_agent')}",
            f"--dashboard-agent-listen-port={p('dashboard_agent_listen')}",
            f"--dashboard-agent-grpc-port={p('dashboard_agent_grpc')}",
            f"--min-worker-port={node.base_port + _WORKER_PORTS[0]}",
            f"--max-worker-port={node.base_port + _WORKER_PORTS[1]}",
        ]
        if node is cluster.head:
            args += ["--head", f"--port={p('gcs')}", f"--ray-client-server-port={p('client')}",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={p('dashboard')}"]
        else:
            args += [f"--address={cluster.gcs_address}"]
        return args

    async def _spawn(self, cluster: LocalCluster, node: LocalNode, spec: RayClusterSpec | None) -> None:
        out = os.path.join(cluster.temp_dir, f"{node.role}.out")
        with open(out, "ab") as f:
            proc = await asyncio.create_subprocess_exec(
                *self.ray_command, *self._args(cluster, node), stdin=asyncio.subprocess.DEVNULL,
                stdout=f, stderr=asyncio.subprocess.STDOUT, env=self._env(cluster, spec),
                cwd=cluster.temp_dir, start_new_session=True,
            )
        node.pid = proc.pid
        cluster.procs[node.role] = proc
        log.info("Ray cluster %s: started %s (pid %d), log %s", cluster.name, node.role, proc.pid, out)

    async def _wait_started(self, cluster: LocalCluster, node: LocalNode, timeout: float) -> None:
        out = os.path.join(cluster.temp_dir, f"{node.role}.out")
        deadline = time.monotonic() + timeout
        proc = cluster.procs[node.role]
        while True:
            try:
                if _READY_LINE in Path(out).read_text(errors="replace"):
                    return
            except OSError:
                pass
            if proc.returncode is not None:
                raise ClusterStartError(
                    f"The Ray {node.role} of cluster {cluster.name} exited (code {proc.returncode}) while "
                    f"starting. Last lines of {out}:\n{_tail(out)}", reason="crash")
            if time.monotonic() > deadline:
                raise ClusterStartError(f"The Ray {node.role} of cluster {cluster.name} did not start within "
                                        f"{int(timeout)} s; see {out}.", reason="timeout")
            await asyncio.sleep(0.25)

    # -------------------------------------------------------------- create
    async def create(self, spec: RayClusterSpec, owner: dict | None = None, timeout: float = 120.0) -> None:
        """Start head and workers; return once ``ray start`` reports the head up.
        The Ray Client warm-up then runs in the background (see :meth:`status`)."""
        cluster = await self.prepare(spec)
        cluster.started = time.monotonic()
        try:
            async with self._starts:
                await self._start_head(cluster, spec, timeout)
            for node in cluster.workers:
                await self._spawn(cluster, node, spec)
        except BaseException as e:
            cluster.failed = str(e)
            raise
        cluster.warmup = asyncio.ensure_future(self._warm_up(cluster, spec))

    async def _start_head(self, cluster: LocalCluster, spec: RayClusterSpec, timeout: float) -> None:
        for attempt in (1, 2, 3):
            await self._spawn(cluster, cluster.head, spec)
            try:
                await self._wait_started(cluster, cluster.head, timeout)
                break
            except ClusterStartError as e:
                # On a busy machine the raylet may miss Ray's fixed 30 s registration
                # window ("The current node timed out during startup"): try again.
                if attempt == 3 or e.reason_label != "crash":
                    raise
                log.warning("Ray cluster %s: the head failed to start (%s); raylet log:\n%s\nretrying",
                            cluster.name, str(e).splitlines()[-1], _fatal(self._session_log(cluster, "raylet.out")))
                await self._kill(cluster, timeout=30)

    @staticmethod
    def _session_log(cluster: LocalCluster, name: str) -> str:
        return os.path.join(cluster.temp_dir, "session_latest", "logs", name)

    async def _probe(self, cluster: LocalCluster, spec: RayClusterSpec | None, timeout: float) -> dict:
        env = self._env(cluster, spec)
        env.update(cluster.notebook_env())
        proc = await asyncio.create_subprocess_exec(
            self.python, "-c", _PROBE, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=cluster.temp_dir, start_new_session=True)
        lines: list[str] = []

        async def read() -> dict:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if line.startswith("RAYSPAWNER_PROBE "):
                    return json.loads(line.split(" ", 1)[1])
                if _FAST_FAIL in line:  # the client would hang on for ~30 s more; retry now
                    raise RuntimeError(line.strip()[:300])
            raise RuntimeError(next((ln for ln in reversed(lines) if "Error" in ln), f"probe exited ({lines[-1:]})")[:300])

        try:
            result = await asyncio.wait_for(read(), timeout)
            try:  # let it disconnect cleanly, so the head frees its client server at once
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                pass
            return result
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            await proc.wait()

    async def _warm_up(self, cluster: LocalCluster, spec: RayClusterSpec | None) -> None:
        last = "none"
        for attempt in range(1, self.warmup_attempts + 1):
            if cluster.procs.get("head") and cluster.procs["head"].returncode is not None:
                cluster.failed = (f"the head exited (code {cluster.procs['head'].returncode}); "
                                  f"last lines of its log:\n{_tail(os.path.join(cluster.temp_dir, 'head.out'))}")
                return
            try:
                cluster.ready_info = await self._probe(cluster, spec, self.warmup_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is retried, then reported
                log.warning("Ray cluster %s: warm-up client connection %d/%d failed: %s",
                            cluster.name, attempt, self.warmup_attempts, e)
                await asyncio.sleep(min(2.0 * attempt, 6.0))
                last = str(e)
                continue
            cluster.head_ready = True
            log.info("Ray cluster %s: a Ray Client connected after %.1f s (%s)", cluster.name,
                     time.monotonic() - cluster.started, cluster.ready_info.get("resources"))
            return
        cluster.failed = (f"no Ray Client could connect to the head after {self.warmup_attempts} attempts "
                          f"(last error: {last})")

    # -------------------------------------------------------------- status
    def _cluster(self, ref: RayClusterSpec | ClusterRef | str) -> LocalCluster | None:
        name = ref if isinstance(ref, str) else ref.name
        return self.clusters.get(name)

    async def status(self, spec: RayClusterSpec | ClusterRef) -> ClusterStatus:
        cluster = self._cluster(spec)
        if cluster is None:
            return ClusterStatus()
        head_alive = _pid_alive(cluster.head.pid, cluster.procs.get("head"))
        workers_alive = sum(_pid_alive(n.pid, cluster.procs.get(n.role)) for n in cluster.workers)
        st = ClusterStatus(exists=head_alive, workers_desired=len(cluster.workers), head_host="127.0.0.1")
        if cluster.failed:
            st.head_failed = cluster.failed
            return st
        if not cluster.head.pid:
            st.phase = "waiting for another Ray head to finish starting" if self._starts.locked() else "starting"
        elif not head_alive:
            st.head_failed = f"the head process (pid {cluster.head.pid}) is gone"
        elif cluster.head_ready:
            st.head_ready = True
            st.phase = "ready"
            st.workers_ready = min(workers_alive, max(0, await self._alive_nodes(cluster) - 1))
        else:
            st.phase = "waiting for a Ray Client to connect"
        return st

    async def _alive_nodes(self, cluster: LocalCluster) -> int:
        """Alive nodes per the dashboard's state API (authorised with the token)."""
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        url = f"http://127.0.0.1:{cluster.head.port('dashboard')}/api/v0/nodes?limit=1000"
        headers = {"Authorization": f"Bearer {cluster.token}"} if cluster.token else {}
        try:
            resp = await AsyncHTTPClient().fetch(url, headers=headers, request_timeout=5)
            data = json.loads(resp.body)["data"]["result"]["result"]
            return sum(1 for n in data if n.get("state") == "ALIVE")
        except (HTTPClientError, OSError, KeyError, ValueError, TypeError) as e:
            log.debug("Ray cluster %s: dashboard node list unavailable: %s", cluster.name, e)
            return int(cluster.ready_info.get("nodes", 1))

    def head_alive(self, ref: RayClusterSpec | ClusterRef | str) -> bool:
        cluster = self._cluster(ref)
        return bool(cluster) and _pid_alive(cluster.head.pid, cluster.procs.get("head"))

    # -------------------------------------------------------------- delete
    async def _kill(self, cluster: LocalCluster, timeout: float) -> list[int]:
        """SIGTERM the nodes' process groups, then SIGKILL every process of the cluster."""
        for node in cluster.nodes:
            if node.pid:
                try:
                    os.killpg(node.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        pgids = [n.pid for n in cluster.nodes if n.pid]
        stuck = await kill_processes(
            lambda: find_processes(MARKER, cluster.cid, cmdline_part=cluster.temp_dir, pgids=pgids),
            timeout, what=cluster.name)
        for proc in cluster.procs.values():
            if proc.returncode is None:
                await asyncio.gather(proc.wait(), return_exceptions=True)
        return stuck

    async def delete(self, ref: RayClusterSpec | ClusterRef | str, timeout: float = 60.0) -> None:
        cluster = self._cluster(ref)
        if cluster is None:
            return
        started = time.monotonic()
        if cluster.warmup and not cluster.warmup.done():
            cluster.warmup.cancel()
            await asyncio.gather(cluster.warmup, return_exceptions=True)
        stuck = await self._kill(cluster, timeout)
        ports = [p for n in cluster.nodes for p in range(n.base_port, n.base_port + NODE_PORTS)]
        while True:
            busy = sorted(set(ports) & await asyncio.to_thread(listening_ports))
            if not busy or time.monotonic() - started > timeout:
                break
            await asyncio.sleep(0.2)
        if stuck or busy:
            log.error("Ray cluster %s: teardown incomplete after %d s (pids %s, ports %s)",
                      cluster.name, int(timeout), stuck, busy)
        else:
            await asyncio.to_thread(shutil.rmtree, cluster.temp_dir, True)
            self.blocks.release(n.base_port for n in cluster.nodes)
        self.clusters.pop(cluster.name, None)
        log.info("Ray cluster %s: torn down in %.1f s", cluster.name, time.monotonic() - started)
