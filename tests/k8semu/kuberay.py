"""A simulation of the KubeRay v1.7 operator's RayCluster controller (``--kuberay`` only).

What it does, following KubeRay's documented behaviour:

- head pod ``<cluster>-head-<5 random>`` from ``spec.headGroupSpec.template`` with labels
  ``ray.io/cluster``, ``ray.io/node-type=head``, ``ray.io/group=headgroup``,
  ``ray.io/is-ray-node=yes``, ``app.kubernetes.io/created-by=kuberay-operator``,
  ``app.kubernetes.io/name=kuberay`` plus the template's;
- Service ``<cluster>-head-svc`` (ClusterIP) selecting the head pod, with the head
  container's ports (or KubeRay's defaults: gcs-server 6379, dashboard 8265, client 10001,
  metrics 8080, serve 8000);
- per ``workerGroupSpecs[]``: ``replicas`` (clamped to min/maxReplicas, times numOfHosts)
  pods ``<cluster>-<group>-worker-<5 random>`` labelled ``ray.io/node-type=worker``,
  ``ray.io/group=<groupName>``;
- the Ray container (index 0) gets KubeRay's env (RAY_CLUSTER_NAME, RAY_PORT, RAY_IP,
  FQ_RAY_IP, KUBERAY_GEN_RAY_START_CMD, ...) and command ``/bin/bash -lc --`` with
  ``ulimit -n 65536; [user command; ]ray start ...`` built from ``rayStartParams``,
  unless the RayCluster has annotation ``ray.io/overwrite-container-cmd: "true"``;
- every pod and the Service carry an ownerReference to the RayCluster (controller,
  blockOwnerDeletion), so deleting the RayCluster garbage-collects them;
- events on the RayCluster: CreatedHeadPod, CreatedWorkerPod, CreatedService, DeletedWorkerPod;
- missing/failed pods are recreated; ``spec.suspend: true`` deletes all pods;
- status: ``state`` ("ready" once head and all desired workers are ready, "suspended"),
  ``head.{podName,podIP,serviceName,serviceIP}``, ``endpoints``, ``readyWorkerReplicas``,
  ``availableWorkerReplicas``, ``desiredWorkerReplicas``, ``min/maxWorkerReplicas``,
  ``observedGeneration``, conditions ``HeadPodReady`` and ``RayClusterProvisioned``.
- ``spec.authOptions`` (e.g. ``mode: token``) is kept as given; nothing else is done with it.

Not simulated: autoscaler sidecar, GCS fault tolerance, the wait-gcs-ready init container,
multi-host TPU groups beyond numOfHosts counting, RayJob/RayService.
"""

from __future__ import annotations

import copy
import shlex
from typing import Any

from .controllers import Controller, _transition, owner_ref, pod_active, pod_ready
from .node import record_event
from .resources import ResourceType, now_iso

DEFAULT_PORTS = [("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("metrics", 8080), ("serve", 8000)]
OVERWRITE_CMD = "ray.io/overwrite-container-cmd"


def _ray_start(params: dict[str, Any], head: bool, address: str | None) -> str:
    args = ["ray", "start"]
    if head:
        args.append("--head")
    else:
        args.append(f"--address={address}")
    params = dict(params or {})
    params.setdefault("block", "true")
    if head:
        params.setdefault("dashboard-agent-listen-port", "52365")
        params.setdefault("metrics-export-port", "8080")
    for k in sorted(params):
        v = str(params[k])
        if k == "block":
            if v.lower() == "true":
                args.append("--block")
        else:
            args.append(f"--{k}={v}")
    return " ".join(args)


class RayClusterController(Controller):
    primary = "rayclusters"

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.svc_t = store.registry.by_name("services")

    def children(self) -> tuple[ResourceType, ...]:
        return (self.pods_t, self.svc_t)

    # ---- pod construction ----------------------------------------------
    def _pod(self, rc: dict[str, Any], template: dict[str, Any], group: str, head: bool) -> dict[str, Any]:
        name, ns = rc["metadata"]["name"], rc["metadata"]["namespace"]
        spec = rc.get("spec") or {}
        tmpl = copy.deepcopy(template or {})
        md = tmpl.get("metadata") or {}
        labels = dict(md.get("labels") or {})
        labels.update(
            {
                "ray.io/cluster": name,
                "ray.io/node-type": "head" if head else "worker",
                "ray.io/group": group,
                "ray.io/is-ray-node": "yes",
                "app.kubernetes.io/created-by": "kuberay-operator",
                "app.kubernetes.io/name": "kuberay",
            }
        )
        pspec = tmpl.get("spec") or {}
        pspec.setdefault("restartPolicy", "Always")
        svc_name = f"{name}-head-svc"
        fq = f"{svc_name}.{ns}.svc.cluster.local"
        gcs_port = str((spec.get("headGroupSpec") or {}).get("rayStartParams", {}).get("port", "6379"))
        group_spec = (
            spec.get("headGroupSpec")
            if head
            else next((g for g in spec.get("workerGroupSpecs") or [] if g.get("groupName") == group), {})
        )
        params = (group_spec or {}).get("rayStartParams") or {}
        containers = pspec.get("containers") or []
        if containers:
            c = containers[0]
            start = _ray_start(params, head, None if head else f"{fq}:{gcs_port}")
            env = [e for e in c.get("env") or []]
            have = {e.get("name") for e in env}
            extra = [
                ("RAY_CLUSTER_NAME", name),
                ("RAY_USAGE_STATS_KUBERAY_IN_USE", "1"),
                ("KUBERAY_GEN_RAY_START_CMD", start),
                ("RAY_PORT", gcs_port),
            ]
            if head:
                extra += [("RAY_ADDRESS", f"127.0.0.1:{gcs_port}"), ("RAY_NODE_TYPE_NAME", "headgroup")]
            else:
                extra += [("FQ_RAY_IP", fq), ("RAY_IP", svc_name), ("RAY_NODE_TYPE_NAME", group)]
            env += [{"name": k, "value": v} for k, v in extra if k not in have]
            if "RAY_CLOUD_INSTANCE_ID" not in have:
                env.append({"name": "RAY_CLOUD_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
            c["env"] = env
            if (rc["metadata"].get("annotations") or {}).get(OVERWRITE_CMD) != "true":
                user = " ".join(
                    shlex.quote(x) if (c.get("command") and not c.get("args")) else x
                    for x in (c.get("command") or []) + (c.get("args") or [])
                )
                c["command"] = ["/bin/bash", "-lc", "--"]
                c["args"] = ["ulimit -n 65536; " + (f"{user}; " if user else "") + start]
        return {
            "metadata": {
                "generateName": f"{name}-head-" if head else f"{name}-{group}-worker-",
                "namespace": ns,
                "labels": labels,
                "annotations": dict(md.get("annotations") or {}),
                "ownerReferences": [owner_ref(rc)],
            },
            "spec": pspec,
        }

    def _service(self, rc: dict[str, Any]) -> dict[str, Any]:
        name = rc["metadata"]["name"]
        tmpl = ((rc.get("spec") or {}).get("headGroupSpec") or {}).get("template") or {}
        containers = (tmpl.get("spec") or {}).get("containers") or [{}]
        ports = [
            {
                "name": p.get("name", f"port-{p['containerPort']}"),
                "port": p["containerPort"],
                "targetPort": p["containerPort"],
                "protocol": p.get("protocol", "TCP"),
            }
            for p in containers[0].get("ports") or []
            if p.get("containerPort")
        ]
        if not ports:
            ports = [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in DEFAULT_PORTS]
        labels = {
            "ray.io/cluster": name,
            "ray.io/node-type": "head",
            "ray.io/identifier": f"{name}-head",
            "app.kubernetes.io/created-by": "kuberay-operator",
            "app.kubernetes.io/name": "kuberay",
        }
        return {
            "metadata": {"name": f"{name}-head-svc", "labels": labels, "ownerReferences": [owner_ref(rc)]},
            "spec": {
                "type": "ClusterIP",
                "ports": ports,
                "selector": {"ray.io/cluster": name, "ray.io/node-type": "head"},
            },
        }

    # ---- reconcile -----------------------------------------------------
    def reconcile(self, ns: str, name: str) -> None:
        rc = self.store.find(self.rtype, ns, name)
        if rc is None or rc["metadata"].get("deletionTimestamp"):
            return
        spec = rc.get("spec") or {}
        pods = [p for p in self.owned_by(self.pods_t, rc) if pod_active(p)]
        if spec.get("suspend"):
            for p in pods:
                self.store.delete(self.pods_t, ns, p["metadata"]["name"])
            self._status(rc, [], {}, suspended=True)
            return
        heads = [p for p in pods if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
        if not heads:
            tmpl = (spec.get("headGroupSpec") or {}).get("template") or {}
            heads = [self.store.create(self.pods_t, ns, self._pod(rc, tmpl, "headgroup", True))]
            self._event(rc, "CreatedHeadPod", f"Created head Pod {ns}/{heads[0]['metadata']['name']}")
        for extra in heads[1:]:
            self.store.delete(self.pods_t, ns, extra["metadata"]["name"])
        if self.store.find(self.svc_t, ns, f"{name}-head-svc") is None:
            self.store.create(self.svc_t, ns, self._service(rc))
            self._event(rc, "CreatedService", f"Created service {ns}/{name}-head-svc")
        workers: dict[str, list[dict[str, Any]]] = {}
        for g in spec.get("workerGroupSpecs") or []:
            gname = g.get("groupName", "workergroup")
            want = self._desired(g)
            mine = [
                p
                for p in pods
                if p["metadata"]["labels"].get("ray.io/node-type") == "worker"
                and p["metadata"]["labels"].get("ray.io/group") == gname
            ]
            for _ in range(want - len(mine)):
                mine.append(self.store.create(self.pods_t, ns, self._pod(rc, g.get("template") or {}, gname, False)))
                self._event(rc, "CreatedWorkerPod", f"Created worker Pod {ns}/{mine[-1]['metadata']['name']}")
            if len(mine) > want:
                for p in sorted(mine, key=lambda p: pod_ready(p))[: len(mine) - want]:
                    self.store.delete(self.pods_t, ns, p["metadata"]["name"])
                    self._event(rc, "DeletedWorkerPod", f"Deleted worker Pod {ns}/{p['metadata']['name']}")
                    mine.remove(p)
            workers[gname] = mine
        self._status(rc, heads[:1], workers)

    def _event(self, rc: dict[str, Any], reason: str, message: str) -> None:
        record_event(self.store, rc, reason, message, "Normal", "raycluster-controller")

    @staticmethod
    def _desired(g: dict[str, Any]) -> int:
        if g.get("suspend"):
            return 0
        mn = int(g.get("minReplicas", 0) or 0)
        mx = int(g.get("maxReplicas", 2**31 - 1) or 0) if "maxReplicas" in g else 2**31 - 1
        want = int(g["replicas"]) if g.get("replicas") is not None else mn
        return max(mn, min(mx, want)) * int(g.get("numOfHosts", 1) or 1)

    def _status(
        self,
        rc: dict[str, Any],
        heads: list[dict[str, Any]],
        workers: dict[str, list[dict[str, Any]]],
        suspended: bool = False,
    ) -> None:
        ns, name = rc["metadata"]["namespace"], rc["metadata"]["name"]
        spec = rc.get("spec") or {}
        old = rc.get("status") or {}
        head = self.store.find(self.pods_t, ns, heads[0]["metadata"]["name"]) if heads else None
        svc = self.store.find(self.svc_t, ns, f"{name}-head-svc")
        head_ready = head is not None and pod_ready(head)
        groups = spec.get("workerGroupSpecs") or []
        desired = sum(self._desired(g) for g in groups)
        live = [self.store.find(self.pods_t, ns, p["metadata"]["name"]) for ps in workers.values() for p in ps]
        live = [p for p in live if p is not None]
        ready_workers = sum(1 for p in live if pod_ready(p))
        running_workers = sum(1 for p in live if (p.get("status") or {}).get("phase") == "Running")
        all_ready = head_ready and ready_workers >= desired
        was_provisioned = any(
            c.get("type") == "RayClusterProvisioned" and c.get("status") == "True" for c in old.get("conditions") or []
        )
        provisioned = all_ready or was_provisioned
        if head is None:
            hr_reason, hr_msg = "HeadPodNotFound", "Head Pod not found"
        elif head_ready:
            hr_reason, hr_msg = "HeadPodRunningAndReady", ""
        else:
            hr_reason, hr_msg = "ContainersNotReady", "containers with unready status"
        conds = [
            {
                "type": "HeadPodReady",
                "status": "True" if head_ready else "False",
                "reason": hr_reason,
                "message": hr_msg,
            },
            {
                "type": "RayClusterProvisioned",
                "status": "True" if provisioned else "False",
                "reason": "AllPodRunningAndReadyFirstTime" if provisioned else "RayClusterPodsProvisioning",
                "message": "All Ray Pods are ready for the first time"
                if provisioned
                else "RayCluster Pods are being provisioned for first time",
            },
        ]
        status: dict[str, Any] = {
            "desiredWorkerReplicas": desired,
            "readyWorkerReplicas": ready_workers,
            "availableWorkerReplicas": running_workers,
            "minWorkerReplicas": sum(int(g.get("minReplicas", 0) or 0) for g in groups),
            "maxWorkerReplicas": sum(int(g.get("maxReplicas", 0) or 0) for g in groups),
            "desiredCPU": "0",
            "desiredMemory": "0",
            "desiredGPU": "0",
            "desiredTPU": "0",
            "observedGeneration": rc["metadata"].get("generation", 1),
            "conditions": _transition(old.get("conditions"), conds),
            "head": {"serviceName": f"{name}-head-svc"},
            "endpoints": {n: str(p) for n, p in DEFAULT_PORTS if n != "serve"},
        }
        if svc is not None and (svc.get("spec") or {}).get("clusterIP"):
            status["head"]["serviceIP"] = svc["spec"]["clusterIP"]
        if head is not None:
            status["head"]["podName"] = head["metadata"]["name"]
            if (head.get("status") or {}).get("podIP"):
                status["head"]["podIP"] = head["status"]["podIP"]
        if suspended:
            status["state"] = "suspended"
        elif all_ready or (was_provisioned and head_ready):
            status["state"] = "ready"
        st_times = dict(old.get("stateTransitionTimes") or {})
        if status.get("state") and status.get("state") != old.get("state"):
            st_times[status["state"]] = now_iso()
        if st_times:
            status["stateTransitionTimes"] = st_times
        compare = {k: v for k, v in old.items() if k != "lastUpdateTime"}
        if compare != status:
            status["lastUpdateTime"] = now_iso()
            self.set_status(rc, status)
