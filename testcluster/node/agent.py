"""The node agent: a kubelet's contract towards the real API server, for one Node.

It authenticates with a client certificate as ``system:node:<name>`` (group
``system:nodes``), so the Node authorizer and NodeRestriction admit exactly what they
admit for a kubelet. It

- registers its Node (capacity, allocatable, conditions, addresses, the kubelet port),
  renews its Lease in ``kube-node-lease`` and refreshes its status;
- watches the pods bound to it (``spec.nodeName``) and hands each new one to its pod
  runtime (``kubelet_sim.SimKubelet`` or ``kubelet_process.ProcessKubelet``) with a
  :class:`ApiPodContext`, through which the runtime reads Secrets/ConfigMaps and writes
  the pod's status and Events;
- honours graceful deletion: a pod with a ``deletionTimestamp`` is stopped within its
  grace period, then deleted for good (grace 0, UID precondition), as the kubelet does;
- evicts a running pod as the kubelet's eviction manager does under node pressure, when a
  test asks by annotating it ``testcluster.rayspawner.test/evict: "<message>"``: its containers are killed, the
  pod is left ``Failed`` with reason ``Evicted`` (and a ``DisruptionTarget`` condition), and a
  Warning ``Evicted`` event is recorded; the object stays until someone deletes it;
- serves the kubelet API that the API server proxies ``pods/log``, ``pods/exec`` (SPDY and
  websockets) and ``/healthz`` to (``kubelet_server.py``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import time
from typing import Any


from .apiclient import Api, ApiError
from .containers import ConfigError
from .kubelet_api import Kubelet

log = logging.getLogger("testcluster.node")

KUBELET_VERSION = "v1.37.2"
# the conditions a kubelet owns; others (PodScheduled, DisruptionTarget, readiness gates) are kept
KUBELET_CONDITIONS = {"Initialized", "Ready", "ContainersReady", "PodReadyToStartContainers"}
EVICT = "testcluster.rayspawner.test/evict"  # a test's stand-in for node pressure; the value is the eviction message


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_sec() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiPodContext:
    """``kubelet_api.PodContext`` for one pod, through the API server."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        self.agent = agent
        md = pod["metadata"]
        self.namespace: str = md["namespace"]
        self.name: str = md["name"]
        self.uid: str = md["uid"]
        self.service_account: str = pod.get("spec", {}).get("serviceAccountName") or "default"
        self.gone = False

    async def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.agent.api.request("GET", f"/api/v1/namespaces/{self.namespace}/{kind}/{name}", ok404=True)
        except ApiError as e:
            log.warning("reading %s %s/%s for pod %s: %s", kind, self.namespace, name, self.name, e)
            return None

    async def get_secret(self, name: str) -> dict[str, Any] | None:
        return await self._get("secrets", name)

    async def get_configmap(self, name: str) -> dict[str, Any] | None:
        return await self._get("configmaps", name)

    async def get_object(self, resource: str, name: str, namespaced: bool = True) -> dict[str, Any] | None:
        if namespaced:
            return await self._get(resource, name)
        try:
            return await self.agent.api.request("GET", f"/api/v1/{resource}/{name}", ok404=True)
        except ApiError as e:
            log.warning("reading %s %s for pod %s: %s", resource, name, self.name, e)
            return None

    async def request_token(self, audience: str | None, expiration_seconds: int) -> str:
        """A ServiceAccount token bound to this pod, as the kubelet requests one for a
        projected volume (the Node authorizer allows it for pods bound to this node)."""
        sa = self.service_account
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else None,
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid},
            },
        }
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token"
        try:
            answer = await self.agent.api.request("POST", path, body)
        except ApiError as e:
            raise ConfigError(f"failed to fetch token: {e}") from None
        return str(answer["status"]["token"])

    async def update_status(self, status: dict[str, Any]) -> None:
        if self.gone:
            return
        current = self.agent.pods.get(self.uid) or {}
        # qosClass is the API server's to compute at creation, and immutable after
        status = {k: v for k, v in copy.deepcopy(status).items() if v is not None and k != "qosClass"}
        mine = [c for c in status.get("conditions") or [] if c.get("type") in KUBELET_CONDITIONS]
        kept = [
            c for c in (current.get("status") or {}).get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS
        ]
        status["conditions"] = kept + mine
        body = {"metadata": {"uid": self.uid}, "status": status}
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        try:
            pod = await self.agent.api.request("PATCH", path, body, content_type="application/merge-patch+json")
            self.agent.pods[self.uid] = pod
        except ApiError as e:
            if e.status in (404, 409):
                self.gone = True
            else:
                log.warning("status of pod %s/%s: %s", self.namespace, self.name, e)

    async def emit_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        await self.agent.event(
            {"kind": "Pod", "apiVersion": "v1", "namespace": self.namespace, "name": self.name, "uid": self.uid},
            reason,
            message,
            type_,
        )

    def service_hosts(self) -> dict[str, str]:
        return self.agent.service_hosts(self.namespace)


class NodeAgent:
    """One Node: registration, lease, pod lifecycle, kubelet API."""

    def __init__(
        self,
        api: Api,
        runtime: Kubelet,
        name: str,
        kubelet_port: int,
        capacity: dict[str, str],
        labels: dict[str, str] | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        self.api = api
        self.runtime = runtime
        self.name = name
        self.kubelet_port = kubelet_port
        self.server: Any = None  # the KubeletServer on kubelet_port (kubelet_server.py)
        self.capacity = capacity
        self.labels = labels or {}
        self.address = address
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> last pod seen
        self.running: set[str] = set()
        self.stopping: set[str] = set()
        self.evicted: set[str] = set()
        self.hosts: Any = None  # a ServiceIndex where the runtime needs names (process pods)
        self._tasks: list[asyncio.Task[Any]] = []

    # -- Node and Lease ----------------------------------------------------------------
    def node_status(self) -> dict[str, Any]:
        ts = now_sec()

        def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
            return {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": ts,
                "lastTransitionTime": self._started,
            }

        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                cond(
                    "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
                ),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": self.address}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "testcluster node agent",
                "containerRuntimeVersion": "testcluster://1",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def register(self) -> None:
        self._started = now_sec()
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **self.labels,
        }
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels}, "spec": {}}
        try:
            await self.api.request("POST", "/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
        await self.push_node_status()

    async def push_node_status(self) -> None:
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": self.node_status()},
            content_type="application/merge-patch+json",
        )

    async def _renew_lease(self) -> None:
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        node = await self.api.request("GET", f"/api/v1/nodes/{self.name}")
        owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
        last_status = time.monotonic()
        while True:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
            }
            try:
                cur = await self.api.request("GET", f"{path}/{self.name}", ok404=True)
                if cur is None:
                    await self.api.request("POST", path, lease)
                else:
                    cur["spec"] = lease["spec"]
                    await self.api.request("PUT", f"{path}/{self.name}", cur)
                if time.monotonic() - last_status > 60:
                    await self.push_node_status()
                    last_status = time.monotonic()
            except Exception as e:  # a missed renewal is retried; the lease lasts 40 s
                log.warning("lease renewal: %s", e)
            await asyncio.sleep(10)

    async def event(self, involved: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        ns = involved.get("namespace") or "default"
        ts = now_sec()
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            await self.api.request("POST", f"/api/v1/namespaces/{ns}/events", ev)
        except ApiError as e:
            log.debug("event %s for %s: %s", reason, involved.get("name"), e)

    def service_hosts(self, namespace: str) -> dict[str, str]:
        return self.hosts.hosts_for(namespace) if self.hosts is not None else {}

    # -- pods ------------------------------------------------------------------------
    async def _watch_pods(self) -> None:
        params = {"fieldSelector": f"spec.nodeName={self.name}"}
        while True:
            try:
                async for type_, pod in self.api.list_and_watch("/api/v1/pods", params):
                    await self._on_pod(type_, pod)
            except Exception as e:
                log.warning("pod watch: %s; relisting", e)
                await asyncio.sleep(1)

    async def _on_pod(self, type_: str, pod: dict[str, Any]) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        if type_ == "DELETED":
            self.pods.pop(uid, None)
            if uid in self.running and uid not in self.stopping:
                self.stopping.add(uid)
                self._spawn(self._stop(pod, 0, delete=False))
            return
        self.pods[uid] = pod
        if md.get("deletionTimestamp"):
            if uid not in self.stopping:
                self.stopping.add(uid)
                self._spawn(self._stop(pod, int(md.get("deletionGracePeriodSeconds") or 0), delete=True))
            return
        message = (md.get("annotations") or {}).get(EVICT)
        if message and uid in self.running and uid not in self.evicted:
            self.evicted.add(uid)
            self._spawn(self._evict(pod, message))
            return
        phase = (pod.get("status") or {}).get("phase")
        if uid not in self.running and uid not in self.evicted and phase not in ("Succeeded", "Failed"):
            self.running.add(uid)
            await self.runtime.run_pod(copy.deepcopy(pod), ApiPodContext(self, pod))

    async def _stop(self, pod: dict[str, Any], grace: int, delete: bool) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        try:
            if uid in self.running:
                await self.runtime.kill_pod(copy.deepcopy(pod), grace)
            if delete:
                body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
                try:
                    await self.api.request("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}", body)
                except ApiError as e:
                    if e.status not in (404, 409):
                        raise
        except Exception:
            log.exception("stopping pod %s/%s", md.get("namespace"), md.get("name"))
        finally:
            self.running.discard(uid)
            self.stopping.discard(uid)

    async def _evict(self, pod: dict[str, Any], message: str) -> None:
        """pkg/kubelet/eviction's evictPod: kill the containers, then phase Failed, reason
        Evicted, the DisruptionTarget condition, terminated container states, an Event."""
        md = pod["metadata"]
        await self.runtime.kill_pod(copy.deepcopy(pod), 0)
        self.running.discard(md["uid"])
        current = (self.pods.get(md["uid"]) or pod).get("status") or {}
        ts = now_sec()
        statuses = []
        for c in current.get("containerStatuses") or []:
            started = ((c.get("state") or {}).get("running") or {}).get("startedAt")
            term = {"exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": ts}
            statuses.append({**c, "ready": False, "started": False, "state": {"terminated": term}})
        conditions = [
            {**c, "status": "False", "lastTransitionTime": ts, "reason": "PodFailed"}
            if c.get("type") in ("Ready", "ContainersReady")
            else c
            for c in current.get("conditions") or []
            if c.get("type") != "DisruptionTarget"
        ]
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "lastTransitionTime": ts,
                "reason": "TerminationByKubelet",
                "message": message,
            }
        )
        status = {
            "phase": "Failed",
            "reason": "Evicted",
            "message": message,
            "conditions": conditions,
            "containerStatuses": statuses,
        }
        body = {"metadata": {"uid": md["uid"]}, "status": status}
        path = f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/status"
        try:
            await self.api.request("PATCH", path, body, content_type="application/merge-patch+json")
        except ApiError as e:
            log.warning("evicting pod %s/%s: %s", md["namespace"], md["name"], e)
            return
        await ApiPodContext(self, pod).emit_event("Evicted", message, "Warning")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # -- kubelet API -----------------------------------------------------------------
    def read_logs(self, ns: str, name: str, container: str, previous: bool) -> str | None:
        pod = next(
            (p for p in self.pods.values() if p["metadata"]["namespace"] == ns and p["metadata"]["name"] == name), None
        )
        if pod is None:
            return None
        if hasattr(self.runtime, "pod_logs"):
            return self.runtime.pod_logs(pod, container)
        return self.runtime.logs(ns, name, container, previous=previous)

    async def run(self) -> None:
        if self.server is not None:
            await self.server.start()
        await self.register()
        if self.hosts is not None:
            self.hosts.start()
        self._tasks += [asyncio.ensure_future(self._renew_lease()), asyncio.ensure_future(self._watch_pods())]

    async def shutdown(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.hosts is not None:
            await self.hosts.stop()
        await self.runtime.shutdown()
        if self.server is not None:
            await self.server.stop()
        await self.api.close()
