"""The local backend: one user-server's Ray cluster as processes on the hub's machine.

Each cluster gets:

- a head (``ray start --head --block``) and ``spec.desired_workers`` local worker
  nodes (``ray start --address=127.0.0.1:<gcs> --block``), each started with
  :func:`asyncio.create_subprocess_exec` in its own session;
- a private block of :data:`NODE_PORTS` ports *per node* (GCS, client server,
  dashboard, dashboard agent, metrics, node/object manager, runtime-env agent,
  the Ray Client's per-connection servers and the worker ports), checked free
  and locked with ``flock`` so two clusters (even of two hubs sharing a temp root)
  never share one;
- its own short ``--temp-dir`` (``<temp_root>/<id>``: Ray's unix socket paths
  are limited to ~107 characters), mode 0700 under a temp root that is created
  privately or checked (:mod:`rayspawner.localpaths`: owned by the hub's user, no
  group/other bits, not a symlink) before anything starts: its ``site/`` dir is on
  every Ray process's ``PYTHONPATH``;
- a random token (``RAY_AUTH_MODE=token``) that only ever travels in the
  children's environment: never on a command line, in a log, or in the state.

Each node has its own ``--temp-dir`` (the head's is the cluster's temp dir, worker
``i``'s is ``<temp dir>/w<i>``): nodes booted back to back in one session dir could
pick the same unix socket names (``raylet.1``) and one raylet then died with "bind:
Address already in use" while its ``ray start --block`` parent lived on.

Connect modes: in ``driver`` mode the notebook gets ``RAY_ADDRESS=127.0.0.1:<GCS
port>`` and its kernel attaches as a direct driver to the head's raylet (Ray prefers
the head among local raylets of that cluster); in ``client`` mode it gets
``ray://127.0.0.1:<client port>`` (Ray Client).

"Ready" means Ray itself (the dashboard's node API, with the token) reports the head
and every requested worker ALIVE; in client mode a warm-up Ray Client connection must
also have succeeded (the first connect to a fresh head can fail with "Starting Ray
client server failed"). :mod:`.localstatus` watches the nodes and restarts a worker
that dies or never joins.

Teardown: SIGTERM the node process groups, SIGKILL stragglers, and kill every
process that carries the cluster's marker (``RAYSPAWNER_CLUSTER_ID`` in its
environment, inherited by every Ray child — workers run in their own process
groups) or names its temp dir; then wait until no port of the cluster is
listening and remove the temp dir. ``ray stop`` is never used: it stops every
Ray on the machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ClusterStartError
from ..localpaths import UnsafePathError, check_private_dir, private_dir, user_temp_root
from ..spec import ClusterRef, RayClusterSpec
from ..spec import MIN_OBJECT_STORE_BYTES
from .base import ClusterBackend, ClusterStatus
from .localcluster import LocalCluster, LocalNode
from .localstatus import _SITECUSTOMIZE, CLIENT_PORTS_ENV, JOIN_TIMEOUT, NODE_LABEL, cluster_status, warm_up
from .localproc import (  # noqa: F401 - re-exported for the spawner, the demo and tests
    MARKER,
    MARKER_ROOT,
    SERVER_ROOT,
    NODE_PORTS,
    PortBlocks,
    _CLIENT_SERVERS,
    _FIXED,
    _WORKER_PORTS,
    _create_time,
    _fatal,
    _pid_alive,
    _tail,
    _token_of,
    find_processes,
    kill_processes,
    listening_ports,
    port_blocks,
    run_periodically,
    sweep_orphans,
    kill_everything_under,
)

log = logging.getLogger(__name__)

_READY_LINE = "Ray runtime started"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


class LocalBackend(ClusterBackend):
    """Ray clusters as local process trees (see the module docstring)."""

    kind = "local"

    def __init__(
        self,
        *,
        temp_root: str = "",
        port_range: tuple[int, int] = (20000, 32700),
        ray_command: list[str] | None = None,
        python: str = sys.executable,
        warmup_attempts: int = 5,
        warmup_timeout: float = 60.0,
        extra_env: dict[str, str] | None = None,
        max_parallel_starts: int = 1,
        worker_restart_limit: int = 3,
    ):
        self.temp_root = temp_root or user_temp_root()
        self.port_range = port_range
        self.python = python
        self.ray_command = list(ray_command or [])
        if not self.ray_command:
            ray = Path(python).parent / "ray"
            self.ray_command = [str(ray)] if ray.exists() else [shutil.which("ray") or "ray"]
        self.warmup_attempts = warmup_attempts
        self.warmup_timeout = warmup_timeout
        self.extra_env = dict(extra_env or {})
        self.worker_restart_limit = worker_restart_limit
        self.clusters: dict[str, LocalCluster] = {}
        # Booting heads one at a time: on a small machine two at once can miss Ray's fixed
        # registration windows (raylet 30 s, dashboard agent 15 s).
        self._starts = asyncio.Semaphore(max(1, max_parallel_starts))
        self._sweeper: asyncio.Task | None = None

    @property
    def blocks(self) -> PortBlocks:
        return port_blocks(os.path.join(self.temp_root, ".ports"), *self.port_range)

    @property
    def starts_busy(self) -> bool:
        return self._starts.locked()

    def check_paths(self) -> None:
        """Create the temp root privately, or refuse it (:class:`UnsafePathError`) if another
        account could control it: its clusters' ``site/`` dirs are on every Ray process's
        ``PYTHONPATH``. Cheap (a few ``lstat``): run before anything is started."""
        private_dir(self.temp_root, "the local Ray temp root (LocalRaySpawner.local_temp_root)")

    # ------------------------------------------------------------- prepare
    async def prepare(self, spec: RayClusterSpec) -> None:
        """Choose ports, temp dirs and token (nothing runs yet). Idempotent."""
        if spec.name in self.clusters and not self.clusters[spec.name].failed:
            return
        self.check_paths()
        roles = [("head", spec.head)]
        for g in spec.worker_groups:
            roles += [(f"{g.name}-{i}", g.resources) for i in range(g.replicas)]
        bases = await asyncio.to_thread(self.blocks.acquire, len(roles))
        cid = secrets.token_hex(4)
        temp_dir = os.path.join(self.temp_root, cid)
        nodes = []
        for index, ((role, res), base) in enumerate(zip(roles, bases)):
            store = max(MIN_OBJECT_STORE_BYTES, int(res.memory_bytes * spec.object_store_fraction))
            nodes.append(
                LocalNode(
                    role,
                    base,
                    res.ray_num_cpus,
                    res.gpu,
                    store,
                    memory_bytes=max(0, res.memory_bytes - store),
                    temp_dir=temp_dir if index == 0 else os.path.join(temp_dir, f"w{index}"),
                )
            )
        cluster = LocalCluster(
            spec.name,
            cid,
            temp_dir,
            self.temp_root,
            nodes,
            token=secrets.token_urlsafe(32) if spec.auth_enabled else None,
            driver=spec.driver_mode,
            extra_env=dict(spec.extra_env),
        )
        os.mkdir(cluster.temp_dir, 0o700)  # never an existing one: the id is fresh
        Path(cluster.temp_dir, "site").mkdir(0o700)
        check_private_dir(cluster.temp_dir, "a Ray cluster's temp dir")
        Path(cluster.temp_dir, "site", "sitecustomize.py").write_text(_SITECUSTOMIZE)
        cluster.write_info(hub_pid=os.getpid(), created=time.time())
        self.clusters[spec.name] = cluster

    def adopt(self, state: dict[str, Any]) -> LocalCluster:
        """Know a cluster from the spawner's saved state (after a hub restart). The token,
        never in the state, is read back from the head's environment where possible."""
        cluster = self.clusters.get(state["name"])
        if cluster is None or cluster.cid != state.get("cid"):
            cluster = LocalCluster.from_state(state)
            cluster.token = _token_of(cluster.head.pid, cluster.cid)
            self.clusters[cluster.name] = cluster
            self.blocks.adopt(n.base_port for n in cluster.nodes)
            if os.path.isdir(cluster.temp_dir):
                cluster.write_info(hub_pid=os.getpid())
        return cluster

    def notebook_started(self, ref: ClusterRef, pid: int) -> None:
        """Record the notebook's pid (and start time) for the orphan sweep."""
        cluster, notebook_pid = self.cluster(ref), pid
        if cluster and notebook_pid:
            cluster.write_info(
                hub_pid=os.getpid(), notebook_pid=notebook_pid, notebook_started=_create_time(notebook_pid)
            )

    def _env(self, cluster: LocalCluster, spec: RayClusterSpec | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JUPYTERHUB_"))}
        env.update(self.extra_env)
        env.update(spec.extra_env if spec else cluster.extra_env)
        env.update(
            {
                MARKER: cluster.cid,
                MARKER_ROOT: cluster.temp_root,
                "RAY_USAGE_STATS_ENABLED": "0",
                # the raylet waits for the dashboard agent's port file (15 s by default): on a busy
                # machine the agent's imports alone take longer (Ray's own 30 s window still applies)
                "RAY_agent_register_timeout_ms": "60000",
                "RAY_raylet_start_wait_time_s": "60",
                # the raylet holds a cluster's first driver until a prestarted worker registers
                # (1.5-2 s here): without that, ray.init() in the kernel returns in ~0.05 s and
                # the first task pays the worker start instead
                "RAY_prestart_worker_first_driver": "0",
                "RAY_CLUSTER_NAME": cluster.name,
                CLIENT_PORTS_ENV: "-".join(str(cluster.head.base_port + off) for off in _CLIENT_SERVERS),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (os.path.join(cluster.temp_dir, "site"), env.get("PYTHONPATH")) if p
                ),
            }
        )
        if cluster.token:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN"] = cluster.token
        return env

    def _args(self, cluster: LocalCluster, node: LocalNode) -> list[str]:
        p = node.port
        args = [
            "start",
            "--block",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={node.num_cpus}",
            f"--num-gpus={node.num_gpus}",
            f"--object-store-memory={node.object_store_bytes}",
            f"--temp-dir={node.temp_dir or cluster.temp_dir}",
            f"--labels={NODE_LABEL}={node.role}",
            f"--node-manager-port={p('node_manager')}",
            f"--object-manager-port={p('object_manager')}",
            f"--metrics-export-port={p('metrics')}",
            f"--runtime-env-agent-port={p('runtime_env_agent')}",
            f"--dashboard-agent-listen-port={p('dashboard_agent_listen')}",
            f"--dashboard-agent-grpc-port={p('dashboard_agent_grpc')}",
            f"--min-worker-port={node.base_port + _WORKER_PORTS[0]}",
            f"--max-worker-port={node.base_port + _WORKER_PORTS[1]}",
        ]
        if node.memory_bytes:
            args.append(f"--memory={node.memory_bytes}")
        if node is cluster.head:
            args += [
                "--head",
                f"--port={p('gcs')}",
                f"--ray-client-server-port={p('client')}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={p('dashboard')}",
            ]
        else:
            args += [f"--address={cluster.gcs_address}"]
        return args

    def _out(self, cluster: LocalCluster, node: LocalNode) -> str:
        return os.path.join(cluster.temp_dir, f"{node.role}.out")

    async def _spawn(self, cluster: LocalCluster, node: LocalNode, spec: RayClusterSpec | None) -> None:
        out = self._out(cluster, node)
        os.makedirs(node.temp_dir or cluster.temp_dir, mode=0o700, exist_ok=True)
        with open(out, "ab") as f:
            proc = await asyncio.create_subprocess_exec(
                *self.ray_command,
                *self._args(cluster, node),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=f,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env(cluster, spec),
                cwd=cluster.temp_dir,
                start_new_session=True,
            )
        node.pid = proc.pid
        cluster.procs[node.role] = proc
        cluster.spawned_at[node.role] = time.monotonic()
        log.debug("Ray cluster %s: started %s (pid %d), log %s", cluster.name, node.role, proc.pid, out)

    async def _wait_started(self, cluster: LocalCluster, node: LocalNode, timeout: float) -> None:
        out = self._out(cluster, node)
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
                    f"starting. Last lines of {out}:\n{_tail(out)}",
                    reason="crash",
                )
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"The Ray {node.role} of cluster {cluster.name} did not start within {int(timeout)} s; see {out}.",
                    reason="timeout",
                )
            await asyncio.sleep(0.25)

    # -------------------------------------------------------------- create
    async def create(self, spec: RayClusterSpec, owner: dict | None = None, timeout: float | None = None) -> None:
        """Start head and workers; return once ``ray start`` reports the head up (within
        ``timeout``, default 120 s). Readiness (nodes ALIVE, client warm-up) is
        :meth:`status`'s business. ``owner`` is unused: see :meth:`notebook_started`."""
        await self.prepare(spec)
        cluster = self.clusters[spec.name]
        timeout = 120.0 if timeout is None else timeout
        cluster.started = time.monotonic()
        try:
            async with self._starts:
                await self._start_head(cluster, spec, timeout)
        except BaseException as e:
            cluster.failed = str(e)
            raise
        log.info(
            "Ray cluster %s started in %.1f s (%s mode): GCS %s, dashboard 127.0.0.1:%d, "
            "%d worker(s), head pid %d, port blocks %s, temp dir %s",
            cluster.name,
            time.monotonic() - cluster.started,
            "driver" if cluster.driver else "client",
            cluster.gcs_address,
            cluster.head.port("dashboard"),
            len(cluster.workers),
            cluster.head.pid,
            ",".join(str(n.base_port) for n in cluster.nodes),
            cluster.temp_dir,
        )
        cluster.boot = asyncio.ensure_future(self._boot_workers(cluster, spec))
        if not cluster.driver:
            cluster.warmup = asyncio.ensure_future(warm_up(self, cluster, spec))

    async def _boot_workers(self, cluster: LocalCluster, spec: RayClusterSpec) -> None:
        """Start the workers one after the other: several raylets registering at once on a
        busy machine miss Ray's startup window ("The current node timed out during
        startup"). A worker that fails here is restarted by :func:`.localstatus.supervise`."""
        for node in cluster.workers:
            cluster.booting = node.role
            await self._spawn(cluster, node, spec)
            out, proc = self._out(cluster, node), cluster.procs[node.role]
            deadline = time.monotonic() + JOIN_TIMEOUT
            while proc.returncode is None and time.monotonic() < deadline:
                if _READY_LINE in await asyncio.to_thread(_read, out):
                    break
                await asyncio.sleep(0.5)
        cluster.booting = None

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
                log.warning(
                    "Ray cluster %s: the head failed to start (%s); raylet log:\n%s\nretrying",
                    cluster.name,
                    str(e).splitlines()[-1],
                    _fatal(self._session_log(cluster, "raylet.out")),
                )
                await self._kill(cluster, timeout=30)

    async def restart_worker(self, cluster: LocalCluster, node: LocalNode) -> None:
        """Kill whatever is left of one worker node and start it again (same ports, temp dir)."""
        pgids = [node.pid] if node.pid else []
        await kill_processes(
            lambda: find_processes(None, "", cmdline_part=node.temp_dir + "/", pgids=pgids),
            30,
            what=f"{cluster.name}/{node.role}",
        )
        proc = cluster.procs.get(node.role)
        if proc is not None and proc.returncode is None:
            await asyncio.gather(proc.wait(), return_exceptions=True)
        await self._spawn(cluster, node, None)

    @staticmethod
    def _session_log(cluster: LocalCluster, name: str) -> str:
        return os.path.join(cluster.temp_dir, "session_latest", "logs", name)

    # -------------------------------------------------------------- status
    def cluster(self, ref: RayClusterSpec | ClusterRef) -> LocalCluster | None:
        """This process's handle on a cluster (ports, temp dir, pids, token)."""
        return self.clusters.get(ref.name)

    def notebook_env(self, spec: RayClusterSpec) -> dict:
        cluster = self.cluster(spec)
        return cluster.notebook_env() if cluster else {}

    async def status(self, spec: RayClusterSpec | ClusterRef) -> ClusterStatus:
        cluster = self.cluster(spec)
        if cluster is None:
            return ClusterStatus()
        st = await cluster_status(self, cluster)
        st.failed_workers = dict(cluster.failed_nodes)
        return st

    def failed_workers(self, ref: RayClusterSpec | ClusterRef) -> dict[str, str]:
        cluster = self.cluster(ref)
        return dict(cluster.failed_nodes) if cluster else {}

    async def wait_ready(self, spec: RayClusterSpec, timeout: float, interval: float = 0.5) -> ClusterStatus:
        """Wait until Ray reports the head and every requested worker ALIVE."""
        deadline = time.monotonic() + timeout
        st = await super().wait_ready(spec, timeout, interval)
        while st.workers_ready < st.workers_desired:
            failed = self.failed_workers(spec)
            if failed:
                raise ClusterStartError(
                    f"Ray cluster {spec.name}: {len(failed)} worker(s) could not join: "
                    + "; ".join(f"{role}: {why}" for role, why in failed.items()),
                    reason="crash",
                )
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"Ray cluster {spec.name}: only {st.workers_ready} of {st.workers_desired} workers "
                    f"joined within {int(timeout)} s.",
                    reason="timeout",
                )
            await asyncio.sleep(interval)
            st = await self.status(spec)
        return st

    def head_alive(self, ref: RayClusterSpec | ClusterRef) -> bool:
        cluster = self.cluster(ref)
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
            timeout,
            what=cluster.name,
        )
        for proc in cluster.procs.values():
            if proc.returncode is None:
                await asyncio.gather(proc.wait(), return_exceptions=True)
        return stuck

    async def delete(self, ref: RayClusterSpec | ClusterRef, timeout: float = 60.0) -> None:
        cluster = self.cluster(ref)
        if cluster is None:
            return
        started = time.monotonic()
        for task in (cluster.warmup, cluster.boot):
            if task and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        stuck = await self._kill(cluster, timeout)
        ports = [p for n in cluster.nodes for p in range(n.base_port, n.base_port + NODE_PORTS)]
        while True:
            busy = sorted(set(ports) & await asyncio.to_thread(listening_ports))
            if not busy or time.monotonic() - started > timeout:
                break
            await asyncio.sleep(0.2)
        if stuck or busy:
            log.error(
                "Ray cluster %s: teardown incomplete after %d s (pids %s, ports %s)",
                cluster.name,
                int(timeout),
                stuck,
                busy,
            )
        else:
            await asyncio.to_thread(shutil.rmtree, cluster.temp_dir, True)
            self.blocks.release(n.base_port for n in cluster.nodes)
        self.clusters.pop(cluster.name, None)
        log.info(
            "Ray cluster %s: teardown done in %.1f s%s",
            cluster.name,
            time.monotonic() - started,
            " (incomplete)" if stuck or busy else "",
        )

    # ------------------------------------------------------------ orphans
    async def sweep_orphans(self, grace: float) -> list[str]:
        """Remove every cluster under the temp root that no live server owns (never under a
        temp root another account could control: it might plant look-alike clusters)."""
        if not os.path.lexists(self.temp_root):
            return []
        try:
            check_private_dir(self.temp_root, "the local Ray temp root (LocalRaySpawner.local_temp_root)")
        except UnsafePathError as e:
            log.error("Orphan sweep skipped: %s", e)
            return []
        return await sweep_orphans(self.temp_root, {c.cid for c in self.clusters.values()}, grace)

    def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def start_sweeper(self, interval: float, grace: float) -> None:
        """Run :meth:`sweep_orphans` every ``interval`` seconds (the first after a short
        delay, so that a restarted hub has adopted its servers' clusters)."""
        if self._sweeper is None and interval > 0:
            self._sweeper = run_periodically(
                lambda: self.sweep_orphans(grace),
                interval,
                min(interval, 10.0),
                f"Local orphan sweep under {self.temp_root}",
            )
