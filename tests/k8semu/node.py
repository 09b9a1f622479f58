"""Server side of the kubelet contract: the scheduler, pod binding and :class:`PodContext`."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from typing import Any

from testcluster.node.kubelet_api import Kubelet
from .resources import now_iso
from .store import Store

log = logging.getLogger("k8semu.node")

NODE_NAME = "k8semu-node"
HOST_IP = "127.0.0.1"  # the simulated node is this machine (loopback only)
UNSCHEDULABLE = "k8semu/unschedulable"


_last_ns = 0


def _event_suffix() -> str:
    """Hex nanoseconds like the real recorder, strictly increasing (names sort chronologically)."""
    global _last_ns
    _last_ns = max(time.time_ns(), _last_ns + 1)
    return f"{_last_ns:x}"


def record_event(
    store: Store,
    obj: dict[str, Any],
    reason: str,
    message: str,
    type_: str = "Normal",
    component: str = "kubelet",
    field_path: str | None = None,
) -> dict[str, Any]:
    """Create a core/v1 Event about ``obj`` (in its namespace) as a controller would."""
    md = obj["metadata"]
    ns = md.get("namespace") or "default"
    involved = {
        "kind": obj.get("kind"),
        "namespace": ns,
        "name": md["name"],
        "uid": md.get("uid"),
        "apiVersion": obj.get("apiVersion"),
        "resourceVersion": md.get("resourceVersion"),
    }
    if field_path:
        involved["fieldPath"] = field_path
    ts = now_iso()
    ev = {
        "metadata": {"name": f"{md['name']}.{_event_suffix()}", "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": NODE_NAME if component == "kubelet" else "",
    }
    return store.create(store.registry.by_name("events"), ns, ev)


class PodCtx:
    """The :class:`kubelet_api.PodContext` for one pod; safe to call from any thread/loop."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, pod: dict[str, Any]) -> None:
        self._store = store
        self._loop = loop
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.uid: str = pod["metadata"]["uid"]

    async def _on_loop(self, fn: Any) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return fn()

        async def run() -> Any:
            return fn()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    async def get_secret(self, name: str) -> dict[str, Any] | None:
        t = self._store.registry.by_name("secrets")
        return await self._on_loop(lambda: copy.deepcopy(self._store.find(t, self.namespace, name)))

    async def get_configmap(self, name: str) -> dict[str, Any] | None:
        t = self._store.registry.by_name("configmaps")
        return await self._on_loop(lambda: copy.deepcopy(self._store.find(t, self.namespace, name)))

    async def update_status(self, status: dict[str, Any]) -> None:
        t = self._store.registry.by_name("pods")
        status = copy.deepcopy(status)

        def apply(o: dict[str, Any]) -> None:
            old = o.get("status") or {}
            conds = status.setdefault("conditions", [])
            types = {c.get("type") for c in conds}
            for c in old.get("conditions") or []:  # keep the scheduler's PodScheduled
                if c.get("type") == "PodScheduled" and "PodScheduled" not in types:
                    conds.insert(0, c)
            status.setdefault("hostIP", old.get("hostIP"))
            status.setdefault("qosClass", old.get("qosClass", "BestEffort"))
            o["status"] = {k: v for k, v in status.items() if v is not None}

        await self._on_loop(lambda: self._store.mutate(t, self.namespace, self.name, apply, uid=self.uid))

    async def emit_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        t = self._store.registry.by_name("pods")

        def emit() -> None:
            pod = self._store.find(t, self.namespace, self.name)
            if pod is not None and pod["metadata"]["uid"] == self.uid:
                record_event(self._store, pod, reason, message, type_)

        await self._on_loop(emit)

    def service_hosts(self) -> dict[str, str]:
        return service_hosts(self._store, self.namespace)


def service_hosts(store: Store, namespace: str) -> dict[str, str]:
    """DNS names -> IP. A Service resolves to a ready (else running) pod it selects, since no
    kube-proxy exists; to its clusterIP if it selects none."""
    from .selectors import labels_match, parse_label_selector  # noqa: PLC0415

    hosts: dict[str, str] = {}
    pods = store.select(store.registry.by_name("pods"), None)
    for svc in store.select(store.registry.by_name("services"), None):
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        sel = (svc.get("spec") or {}).get("selector") or {}
        ip = None
        if sel:
            reqs = parse_label_selector(",".join(f"{k}={v}" for k, v in sel.items()))
            candidates = [
                p
                for p in pods
                if p["metadata"]["namespace"] == ns
                and (p.get("status") or {}).get("podIP")
                and not p["metadata"].get("deletionTimestamp")
                and labels_match(reqs, p["metadata"].get("labels"))
            ]
            candidates.sort(key=lambda p: not _pod_ready(p))
            if candidates:
                ip = candidates[0]["status"]["podIP"]
        ip = ip or (svc.get("spec") or {}).get("clusterIP")
        if not ip or ip == "None":
            continue
        for h in (f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"):
            hosts[h] = ip
        if ns == namespace:
            hosts[name] = ip
    for p in pods:
        ip = (p.get("status") or {}).get("podIP")
        if ip and p["metadata"]["namespace"] == namespace:
            hosts.setdefault(p["metadata"]["name"], ip)
        if ip:
            hosts[f"{ip.replace('.', '-')}.{p['metadata']['namespace']}.pod.cluster.local"] = ip
    return hosts


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


class Scheduler:
    """Binds new pods to the single node and hands them to the kubelet.

    Pods annotated ``k8semu/unschedulable: "true"`` stay Pending with PodScheduled=False
    (reason Unschedulable) and a FailedScheduling event until the annotation goes away.
    """

    def __init__(self, store: Store, kubelet: Kubelet, delays: dict[str, float], jitter: float = 0.0) -> None:
        self.store = store
        self.kubelet = kubelet
        self.delays = delays
        self.jitter = jitter
        self.pods_t = store.registry.by_name("pods")
        self._bound: set[str] = set()
        # The process kubelet reports the Scheduled event itself.
        self.emit_scheduled = not getattr(kubelet, "emits_scheduled_event", type(kubelet).__name__ == "ProcessKubelet")
        store.listeners.append(self._on_event)
        store.pod_killer = self._kill

    def _delay(self, key: str) -> float:
        d = float(self.delays.get(key, 0.0))
        return d + (random.uniform(0, self.jitter) if self.jitter else 0.0)

    def _on_event(self, type_: str, rtype: Any, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if rtype is not self.pods_t or type_ != "ADDED":
            return
        self.store.spawn(self._schedule(obj))

    async def _schedule(self, pod: dict[str, Any]) -> None:
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
        if not (pod.get("spec") or {}).get("nodeName"):
            await asyncio.sleep(self._delay("schedule"))
            warned = False
            while True:
                cur = self.store.find(self.pods_t, ns, name)
                if cur is None or cur["metadata"]["uid"] != uid or cur["metadata"].get("deletionTimestamp"):
                    return
                if (cur["metadata"].get("annotations") or {}).get(UNSCHEDULABLE) != "true":
                    break
                if not warned:
                    msg = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
                    self.store.mutate(self.pods_t, ns, name, lambda o, m=msg: _set_unschedulable(o, m), uid=uid)
                    record_event(self.store, cur, "FailedScheduling", msg, "Warning", "default-scheduler")
                    warned = True
                await asyncio.sleep(0.1)
            bound = self.store.mutate(self.pods_t, ns, name, _bind, uid=uid)
            if bound is None:
                return
            if self.emit_scheduled:
                record_event(
                    self.store,
                    bound,
                    "Scheduled",
                    f"Successfully assigned {ns}/{name} to {NODE_NAME}",
                    "Normal",
                    "default-scheduler",
                )
            pod = bound
        self._bound.add(uid)
        loop = asyncio.get_running_loop()
        try:
            await self.kubelet.run_pod(copy.deepcopy(pod), PodCtx(self.store, loop, pod))
        except Exception:
            log.exception("kubelet run_pod failed for %s/%s", ns, name)

    async def _kill(self, pod: dict[str, Any], grace: int) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._bound:
            self._bound.discard(uid)
            await self.kubelet.kill_pod(copy.deepcopy(pod), grace)


def _set_unschedulable(o: dict[str, Any], msg: str) -> None:
    st = o.setdefault("status", {})
    st["phase"] = "Pending"
    st["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": msg,
            "lastProbeTime": None,
            "lastTransitionTime": now_iso(),
        }
    ]


def _bind(o: dict[str, Any]) -> None:
    o["spec"]["nodeName"] = NODE_NAME
    st = o.setdefault("status", {})
    st["phase"] = "Pending"
    conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
    st["conditions"] = [
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now_iso()}
    ] + conds
