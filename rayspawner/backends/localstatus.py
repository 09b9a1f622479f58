"""Status of a local Ray cluster as Ray itself sees it (helpers of :mod:`.local`).

Nodes are counted from the dashboard's node API (``/api/v0/nodes``, with the
cluster's token), never from parent processes: a worker's raylet can die while its
``ray start --block`` parent lives on. Every node carries the label
``rayspawner-node=<role>``, so a record maps to the process that started it. Asking
the dashboard starts no driver, so readiness checks never appear among the
dashboard's jobs.

Client mode only: :func:`warm_up` connects Ray Clients (a script named
``rayspawner_readiness_check.py``) until one succeeds, since the first connect to a
fresh head can fail with "Starting Ray client server failed".

:func:`supervise` restarts a worker whose process exited, whose node Ray reports
DEAD, or that has not joined within :data:`JOIN_TIMEOUT` seconds, up to the
backend's ``worker_restart_limit``; past that the worker is reported failed
(:attr:`LocalCluster.failed_nodes`), never dropped silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import aio
from .base import ClusterStatus
from .localproc import _pid_alive, _tail

if TYPE_CHECKING:
    from ..spec import RayClusterSpec
    from .local import LocalBackend
    from .localcluster import LocalCluster, LocalNode

log = logging.getLogger(__name__)

NODE_LABEL = "rayspawner-node"
CLIENT_PORTS_ENV = "RAYSPAWNER_CLIENT_SERVER_PORTS"
_FAST_FAIL = "Starting Ray client server failed"
#: seconds a started worker may take to show up ALIVE before it is restarted
JOIN_TIMEOUT = 120.0


async def fetch_nodes(cluster: LocalCluster, timeout: float = 5.0) -> dict[str, str] | None:
    """``{role: "ALIVE" | "DEAD"}`` per Ray's node table (ALIVE wins over an older DEAD
    record of a restarted node), or None while the dashboard cannot answer."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError

    url = f"http://127.0.0.1:{cluster.head.port('dashboard')}/api/v0/nodes?limit=1000&detail=true"
    headers = {"Authorization": f"Bearer {cluster.token}"} if cluster.token else {}
    try:
        resp = await AsyncHTTPClient().fetch(url, headers=headers, request_timeout=timeout)
        data = json.loads(resp.body)["data"]["result"]["result"]
    except (HTTPClientError, OSError, KeyError, ValueError, TypeError) as e:
        log.debug("Ray cluster %s: dashboard node list unavailable: %s", cluster.name, e)
        return None
    states: dict[str, str] = {}
    for n in data:
        role = (n.get("labels") or {}).get(NODE_LABEL)
        if role and states.get(role) != "ALIVE":
            states[role] = n.get("state", "")
    return states


def _node_alive(cluster: LocalCluster, node: LocalNode) -> bool:
    return _pid_alive(node.pid, cluster.procs.get(node.role))


async def supervise(backend: LocalBackend, cluster: LocalCluster, nodes: dict[str, str]) -> None:
    """Restart (or report) workers that died or never joined. One caller at a time."""
    async with cluster.lock:
        now = time.monotonic()
        for node in cluster.workers:
            if node.role in cluster.failed_nodes or not node.pid or node.role == cluster.booting:
                continue
            state = nodes.get(node.role)
            if state == "ALIVE" and _node_alive(cluster, node):
                continue
            if not _node_alive(cluster, node):
                why = "its process exited"
            elif state == "DEAD":
                why = "Ray reports its node dead"
            elif now - cluster.spawned_at.get(node.role, now) > JOIN_TIMEOUT:
                why = f"it did not join within {int(JOIN_TIMEOUT)} s"
            else:
                continue  # still booting
            if node.restarts >= backend.worker_restart_limit:
                cluster.failed_nodes[node.role] = f"{why}; restarted {node.restarts} time(s) already"
                log.error(
                    "Ray cluster %s: worker %s failed (%s); not restarting it again",
                    cluster.name,
                    node.role,
                    cluster.failed_nodes[node.role],
                )
                continue
            node.restarts += 1
            cluster.events.append(f"worker {node.role} died ({why}); restarting it")
            log.warning(
                "Ray cluster %s: worker %s died (%s); restart %d/%d. Its log ends:\n%s",
                cluster.name,
                node.role,
                why,
                node.restarts,
                backend.worker_restart_limit,
                _tail(backend._out(cluster, node), 4),
            )
            await backend.restart_worker(cluster, node)


async def cluster_status(backend: LocalBackend, cluster: LocalCluster) -> ClusterStatus:
    head_alive = _node_alive(cluster, cluster.head)
    st = ClusterStatus(exists=head_alive, workers_desired=len(cluster.workers))
    if cluster.failed:
        st.head_failed = cluster.failed
        return st
    if not cluster.head.pid:
        st.phase = "waiting for another Ray head to finish starting" if backend.starts_busy else "starting"
        return st
    if not head_alive:
        st.head_failed = f"the head process (pid {cluster.head.pid}) is gone"
        return st
    nodes = await fetch_nodes(cluster)
    if nodes is None:
        st.phase = "starting (dashboard not answering yet)"
        st.head_ready = cluster.head_ready  # a dashboard hiccup does not un-ready a ready head
        return st
    if nodes.get("head") != "ALIVE":
        st.phase = "starting (head node not registered yet)"
        return st
    if cluster.driver or cluster.client_ok:
        if not cluster.head_ready:
            log.info(
                "Ray cluster %s: head accepting connections after %.1f s",
                cluster.name,
                time.monotonic() - cluster.started,
            )
        cluster.head_ready = True
    else:
        st.phase = "waiting for a Ray Client to connect"
    if cluster.workers:
        await supervise(backend, cluster, nodes)
    st.head_ready = cluster.head_ready
    st.workers_ready = sum(1 for n in cluster.workers if nodes.get(n.role) == "ALIVE")
    if cluster.head_ready:
        st.phase = "ready"
    st.warnings = [f"worker {role} failed: {why}" for role, why in cluster.failed_nodes.items()]
    return st


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
# Run from a file named like this (what the dashboard's job list shows as its entrypoint)
# with the notebook's env: exactly what a user's ray.init() does. Client mode only.
_PROBE_FILE = "rayspawner_readiness_check.py"
_PROBE = '''\
"""rayspawner readiness check: a Ray Client connection to a fresh head."""
import json, ray
ray.init(logging_level="ERROR", log_to_driver=False)
nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
print("RAYSPAWNER_PROBE " + json.dumps({"nodes": nodes, "resources": ray.cluster_resources()}), flush=True)
ray.shutdown()
'''


async def _probe(backend: LocalBackend, cluster: LocalCluster, spec: RayClusterSpec | None, timeout: float) -> dict:
    env = backend._env(cluster, spec)
    env.update(cluster.notebook_env())
    probe = Path(cluster.temp_dir, _PROBE_FILE)
    if not probe.exists():
        probe.write_text(_PROBE)
    proc = await asyncio.create_subprocess_exec(
        backend.python,
        str(probe),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cluster.temp_dir,
        start_new_session=True,
    )
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
        result = await aio.wait_for(read(), timeout)
        try:  # let it disconnect cleanly, so the head frees its client server at once
            await aio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            pass
        return result
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        await proc.wait()


async def warm_up(backend: LocalBackend, cluster: LocalCluster, spec: RayClusterSpec | None) -> None:
    """Client mode: Ray Client connections until one succeeds (``cluster.client_ok``)."""
    last = "none"
    for attempt in range(1, backend.warmup_attempts + 1):
        if cluster.procs.get("head") and cluster.procs["head"].returncode is not None:
            cluster.failed = (
                f"the head exited (code {cluster.procs['head'].returncode}); "
                f"last lines of its log:\n{_tail(os.path.join(cluster.temp_dir, 'head.out'))}"
            )
            return
        try:
            cluster.ready_info = await _probe(backend, cluster, spec, backend.warmup_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure is retried, then reported
            log.warning(
                "Ray cluster %s: warm-up client connection %d/%d failed: %s",
                cluster.name,
                attempt,
                backend.warmup_attempts,
                e,
            )
            await asyncio.sleep(min(2.0 * attempt, 6.0))
            last = str(e)
            continue
        cluster.client_ok = True
        log.info(
            "Ray cluster %s: a Ray Client connected after %.1f s (%s)",
            cluster.name,
            time.monotonic() - cluster.started,
            cluster.ready_info.get("resources"),
        )
        return
    cluster.failed = (
        f"no Ray Client could connect to the head after {backend.warmup_attempts} attempts (last error: {last})"
    )
