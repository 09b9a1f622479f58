"""The loopback API server in its own process, plus a tiny stats endpoint for the bench.

    python -m benchmarks.emu_proc --kubeconfig PATH --stats-port S [--sim-delays JSON] [--jitter J]

Runs :class:`tests.k8semu.K8sEmu` (sim kubelet) exactly as ``python -m tests.k8semu
serve`` does, and next to it a plain-HTTP stats server on 127.0.0.1:S (nothing in
k8semu is changed; the stats server only reads its public counters):

- ``GET /stats``: ``{"requests": [[verb, resource, ns, name], ...], "watches": {"current",
  "peak"}, "pod_ready": {pod: t}, "pod_gone": {pod: t}, "cluster_gone": {cluster: t},
  "cluster_live": {cluster: n}, "cpu": seconds}`` (times are ``time.time()``; the hub side
  compares them with its own wall clock, same machine);
- ``POST /reset``: clears the request log, resets the watch peak to the current count.

The pod/cluster times come from a store listener: the first time a pod's Ready
condition becomes True, when a pod is removed, and when the last object labelled
``ray.io/cluster=<name>`` (managed by rayspawner) is removed.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from tests.k8semu import K8sEmu

CLUSTER = "ray.io/cluster"
MANAGED = "app.kubernetes.io/managed-by"


class Tracker:
    """Store listener (runs on the emulator's loop); read from the stats thread under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pod_ready: dict[str, float] = {}
        self.pod_gone: dict[str, float] = {}
        self.cluster_live: dict[str, set[str]] = {}
        self.cluster_gone: dict[str, float] = {}

    def __call__(self, type_: str, rtype: Any, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        now = time.time()
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        labels = meta.get("labels") or {}
        with self.lock:
            if rtype.plural == "pods":
                if type_ == "DELETED":
                    self.pod_gone[name] = now
                elif name not in self.pod_ready:
                    conds = (obj.get("status") or {}).get("conditions") or []
                    if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                        self.pod_ready[name] = now
            cluster = labels.get(CLUSTER)
            if cluster and labels.get(MANAGED) == "rayspawner":
                key = f"{rtype.plural}/{name}"
                live = self.cluster_live.setdefault(cluster, set())
                if type_ == "DELETED":
                    live.discard(key)
                    if not live:
                        self.cluster_gone[cluster] = now
                else:
                    live.add(key)
                    self.cluster_gone.pop(cluster, None)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "pod_ready": dict(self.pod_ready),
                "pod_gone": dict(self.pod_gone),
                "cluster_gone": dict(self.cluster_gone),
                "cluster_live": {k: len(v) for k, v in self.cluster_live.items()},
            }


def serve_stats(emu: K8sEmu, tracker: Tracker, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            ru = resource.getrusage(resource.RUSAGE_SELF)
            self._send(
                {
                    "requests": emu.request_log,
                    "watches": {"current": emu.open_watches.current, "peak": emu.open_watches.peak},
                    "cpu": ru.ru_utime + ru.ru_stime,
                    **tracker.snapshot(),
                }
            )

        def do_POST(self) -> None:  # noqa: N802
            emu.reset_request_log()
            emu.open_watches.reset_peak()
            self._send({"ok": True})

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, name="stats", daemon=True).start()
    return httpd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.emu_proc")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stats-port", type=int, required=True)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--sim-delays", default=None)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    if a.seed is not None:
        import random

        random.seed(a.seed)
    emu = K8sEmu(
        sim_delays=yaml.safe_load(a.sim_delays) if a.sim_delays else None,
        jitter=a.jitter,
        port=a.port,
        kubeconfig_path=a.kubeconfig,
        history_size=200000,
    )
    emu.start()
    tracker = Tracker()
    emu.call(lambda st: st.listeners.append(tracker))
    httpd = serve_stats(emu, tracker, a.stats_port)
    print(json.dumps({"url": emu.url, "stats": f"http://127.0.0.1:{a.stats_port}"}), flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    httpd.shutdown()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
