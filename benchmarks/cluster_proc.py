"""One namespace of the real test cluster for one bench phase, plus a tiny stats endpoint.

    python -m benchmarks.cluster_proc --workdir DIR [--node sim|process]

Uses the test cluster in ``$RAYSPAWNER_TESTCLUSTER_DIR`` if up, else starts its own (KubeRay, a
sim and a process node) under /var/tmp and stops it at exit. ``testcluster.fixtures.make_kube``
makes a fresh namespace (restricted Pod Security, the hub's ServiceAccount bound to the shipped
Roles) behind a fault proxy. Prints one JSON line ``{"url" (the proxy), "stats", "kubeconfig"
(the hub's: ServiceAccount token, via the proxy), "namespace", "cluster", "kuberay"}``, serves
until SIGTERM/SIGINT, then drops the namespace:

- ``GET /stats`` (or the bare ``stats`` URL): ``requests`` (the proxy's log: the hub's requests
  only, ``[verb, resource, ns, name]``), ``watches`` (``current``, ``peak``), ``pod_ready``,
  ``pod_gone``, ``cluster_gone`` (name → ``time.time()``), ``cluster_live`` (name → objects
  left), ``cpu`` (control-plane CPU seconds since the last reset) and ``cpu_by_process``;
- ``POST /reset``: clears the request log, resets the watch peak and the CPU baseline.

The times come from list+watch of the namespace as cluster-admin, straight to the API server
(neither in the proxy's log nor in its watch count): a pod's first Ready=True, a pod's
deletion, the deletion of the last object labelled ``ray.io/cluster=<name>`` managed by
rayspawner. CPU is utime+stime (``/proc/<pid>/stat``) of the processes in the cluster's
``state.json`` (kube-apiserver, etcd, controller manager, scheduler, node agents, KubeRay
operator); on a shared cluster it includes whatever else runs on it meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from testcluster.client import path_of
from testcluster.cluster import down, is_up, up
from testcluster.fixtures import Kube, drop_kube, make_kube, open_cluster
from testcluster.kubeconfig import ssl_context

ENV = "RAYSPAWNER_TESTCLUSTER_DIR"
CLUSTER = "ray.io/cluster"
MANAGED = "app.kubernetes.io/managed-by"
MANAGED_SELECTOR = f"{MANAGED}=rayspawner"
#: what rayspawner makes besides pods (ReplicaSets come from its Deployments, labels copied)
OBJECTS = ("services", "secrets", "deployments", "replicasets", "networkpolicies", "configmaps")
TICK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def shared_cluster() -> Iterator[Path]:
    """The running test cluster's directory (``$RAYSPAWNER_TESTCLUSTER_DIR``), or one of ours
    (kuberay, sim + process nodes, as scripts/test.sh starts it) for the duration, exported in
    the environment so that child processes share it instead of starting their own."""
    shared = os.environ.get(ENV)
    if shared and is_up(Path(shared)):
        yield Path(shared)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-testcluster-", dir="/var/tmp")) / "cluster"
    try:
        up(root, kuberay=True, nodes=("sim", "process"))
        os.environ[ENV] = str(root)
        yield root
    finally:
        os.environ.pop(ENV, None) if shared is None else os.environ.update({ENV: shared})  # as it was
        down(root, quiet=True)
        with contextlib.suppress(OSError):
            root.parent.rmdir()


def process_cpu(pids: dict[str, int]) -> dict[str, float]:
    """utime + stime (all threads) of each live process, in seconds."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)
    return out


class Tracker:
    """Pod and cluster times from watch events (one event loop: no lock needed)."""

    def __init__(self) -> None:
        self.pod_ready: dict[str, float] = {}
        self.pod_gone: dict[str, float] = {}
        self.cluster_live: dict[str, set[str]] = {}
        self.cluster_gone: dict[str, float] = {}

    def __call__(self, type_: str, plural: str, obj: dict[str, Any]) -> None:
        now = time.time()
        meta = obj.get("metadata") or {}
        name, labels = meta.get("name", ""), meta.get("labels") or {}
        if plural == "pods":
            if type_ == "DELETED":
                self.pod_gone[name] = now
            elif name not in self.pod_ready:
                conds = (obj.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                    self.pod_ready[name] = now
        cluster = labels.get(CLUSTER)
        if cluster and labels.get(MANAGED) == "rayspawner":
            live, key = self.cluster_live.setdefault(cluster, set()), f"{plural}/{name}"
            if type_ == "DELETED":
                live.discard(key)
                if not live:
                    self.cluster_gone[cluster] = now
            else:
                live.add(key)
                self.cluster_gone.pop(cluster, None)

    def snapshot(self) -> dict[str, Any]:
        return {
            "pod_ready": dict(self.pod_ready),
            "pod_gone": dict(self.pod_gone),
            "cluster_gone": dict(self.cluster_gone),
            "cluster_live": {k: len(v) for k, v in self.cluster_live.items()},
        }


async def follow(
    session: aiohttp.ClientSession, base: str, plural: str, selector: str, track: Tracker, listed: asyncio.Event
) -> None:
    """List, then watch from that resourceVersion; relist when the watch says the version is gone."""
    sel = {"labelSelector": selector} if selector else {}
    rv = ""
    while True:
        if not rv:
            async with session.get(f"{base}?{urlencode(sel)}") as r:
                doc = await r.json()
            rv = doc["metadata"]["resourceVersion"]
            for item in doc.get("items") or []:
                track("ADDED", plural, item)
            listed.set()
        q = {**sel, "watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
        async with session.get(f"{base}?{urlencode(q)}", timeout=aiohttp.ClientTimeout(None)) as r:
            if r.status != 200:
                rv = await asyncio.sleep(1, "")  # relist
                continue
            async for line in r.content:
                ev = json.loads(line) if line.strip() else {"type": "BOOKMARK", "object": {"metadata": {}}}
                if ev["type"] == "ERROR":  # 410 Gone: relist
                    rv = ""
                    break
                rv = ev["object"]["metadata"].get("resourceVersion", rv)
                if ev["type"] != "BOOKMARK":
                    track(ev["type"], plural, ev["object"])


def stats_app(kube: Kube, track: Tracker, pids: dict[str, int]) -> web.Application:
    base = {"cpu": process_cpu(pids)}

    async def get(_: web.Request) -> web.Response:
        cpu = {k: v - base["cpu"].get(k, 0.0) for k, v in process_cpu(pids).items()}
        w = kube.open_watches
        return web.json_response(
            {
                "requests": list(kube.request_log),
                "watches": {"current": w.current, "peak": w.peak},
                "cpu": sum(cpu.values()),
                "cpu_by_process": cpu,
                **track.snapshot(),
            }
        )

    async def reset(_: web.Request) -> web.Response:
        kube.reset_request_log()
        kube.open_watches.reset_peak()
        base["cpu"] = process_cpu(pids)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", get)  # the printed "stats" URL itself, as the hub worker reads it
    app.router.add_get("/stats", get)
    app.router.add_post("/reset", reset)
    return app


async def serve(kube: Kube, root: Path) -> None:
    pids: dict[str, int] = json.loads((root / "state.json").read_text()).get("pids", {})
    c = kube.cluster.client
    ctx = ssl_context(c.ca, c.cert)
    track = Tracker()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    plurals = [("pods", ""), *((p, MANAGED_SELECTOR) for p in OBJECTS)]
    if kube.kuberay:
        plurals.append(("rayclusters", MANAGED_SELECTOR))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), read_bufsize=2**22) as session:
        listed = [asyncio.Event() for _ in plurals]
        tasks = [
            asyncio.ensure_future(follow(session, c.server + path_of(p, kube.ns), p, s, track, ev))
            for (p, s), ev in zip(plurals, listed)
        ]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in listed)), 60)
        runner = web.AppRunner(stats_app(kube, track, pids), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        info = {"url": kube.url, "stats": f"http://127.0.0.1:{port}", "kubeconfig": str(kube.kubeconfig_path)}
        print(json.dumps({**info, "namespace": kube.ns, "cluster": str(root), "kuberay": kube.kuberay}), flush=True)
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through up()/make_kube, which clean up


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster_proc")
    ap.add_argument("--workdir", default=None, help="where the hub's kubeconfig goes (default: a temp dir)")
    ap.add_argument("--node", choices=("sim", "process"), default="sim")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="cluster-proc-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with shared_cluster() as root:
        kube = make_kube(open_cluster(root), workdir, node=a.node)
        try:
            asyncio.run(serve(kube, root))
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
            drop_kube(kube)
            # the next phase should not pay for this namespace's deletion (namespace controller, GC)
            c, deadline = kube.cluster.client, time.monotonic() + 60
            while c.get_object("namespaces", None, kube.ns) is not None and time.monotonic() < deadline:
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
