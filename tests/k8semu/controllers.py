"""Controllers: Deployment -> ReplicaSet -> Pods, and the KubeRay RayCluster simulation."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from typing import Any

from .resources import ResourceType, now_iso
from .store import Store

log = logging.getLogger("k8semu.controllers")

Key = tuple[str, str]


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: dict[str, Any]) -> str | None:
    for r in obj["metadata"].get("ownerReferences") or []:
        if r.get("controller"):
            return r.get("uid")
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def pod_active(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


class Controller:
    """A work queue of (namespace, name) keys of ``primary`` objects, reconciled one at a time."""

    primary: str = ""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rtype: ResourceType = store.registry.by_name(self.primary)
        self.pods_t = store.registry.by_name("pods")
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.pending: set[Key] = set()
        store.listeners.append(self._on_event)
        self.task = asyncio.ensure_future(self._worker())

    def stop(self) -> None:
        self.task.cancel()

    def enqueue(self, key: Key) -> None:
        if key not in self.pending:
            self.pending.add(key)
            self.queue.put_nowait(key)

    def owned_by(self, rtype: ResourceType, owner: dict[str, Any]) -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        return [o for o in self.store.select(rtype, owner["metadata"]["namespace"]) if controller_uid(o) == uid]

    def _on_event(self, type_: str, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ns = obj["metadata"].get("namespace", "")
        if rtype is self.rtype:
            if (
                type_ != "MODIFIED"
                or (obj.get("spec") != (old or {}).get("spec"))
                or obj["metadata"].get("deletionTimestamp")
            ):
                self.enqueue((ns, obj["metadata"]["name"]))
            return
        if rtype in self.children():
            for r in obj["metadata"].get("ownerReferences") or []:
                if r.get("controller") and r.get("kind") == self.rtype.kind:
                    self.enqueue((ns, r["name"]))

    def children(self) -> tuple[ResourceType, ...]:
        return ()

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            self.pending.discard(key)
            try:
                self.reconcile(*key)
            except Exception:
                log.exception("%s reconcile of %s failed", type(self).__name__, key)
            await asyncio.sleep(0)

    def reconcile(self, ns: str, name: str) -> None:
        raise NotImplementedError

    def set_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        md = obj["metadata"]
        self.store.mutate(
            self.rtype, md["namespace"], md["name"], lambda o: o.__setitem__("status", status), uid=md["uid"]
        )


def _template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    n = int(digest[:16], 16)
    out = ""
    for _ in range(10):
        n, r = divmod(n, len(alphabet))
        out += alphabet[r]
    return out


def _transition(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep lastTransitionTime of conditions whose status did not change."""
    prev = {c.get("type"): c for c in old or []}
    for c in new:
        p = prev.get(c["type"])
        c["lastTransitionTime"] = (
            p["lastTransitionTime"]
            if p and p.get("status") == c["status"] and p.get("lastTransitionTime")
            else now_iso()
        )
    return new


class DeploymentController(Controller):
    """One ReplicaSet per pod template (``<deploy>-<hash>``); old ones are scaled to 0
    (a Recreate-style rollout, no surge accounting)."""

    primary = "deployments"

    def children(self) -> tuple[ResourceType, ...]:
        return (self.store.registry.by_name("replicasets"),)

    def reconcile(self, ns: str, name: str) -> None:
        d = self.store.find(self.rtype, ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        rs_t = self.children()[0]
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        template = copy.deepcopy(spec.get("template") or {})
        h = _template_hash(template)
        rss = self.owned_by(rs_t, d)
        cur = next((r for r in rss if (r["metadata"].get("labels") or {}).get("pod-template-hash") == h), None)
        if cur is None:
            tmpl = copy.deepcopy(template)
            tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            sel = copy.deepcopy(spec.get("selector") or {})
            sel.setdefault("matchLabels", {})["pod-template-hash"] = h
            rev = 1 + max(
                [int((r["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", 0)) for r in rss]
                or [0]
            )
            cur = self.store.create(
                rs_t,
                ns,
                {
                    "metadata": {
                        "name": f"{name}-{h}",
                        "labels": dict(tmpl["metadata"]["labels"]),
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": str(replicas),
                            "deployment.kubernetes.io/revision": str(rev),
                        },
                        "ownerReferences": [owner_ref(d)],
                    },
                    "spec": {"replicas": replicas, "selector": sel, "template": tmpl},
                },
            )
        elif int((cur.get("spec") or {}).get("replicas", 1)) != replicas:
            self.store.mutate(rs_t, ns, cur["metadata"]["name"], lambda o: o["spec"].__setitem__("replicas", replicas))
        for r in rss:
            if r["metadata"]["uid"] != cur["metadata"]["uid"] and int(r["spec"].get("replicas", 0)) != 0:
                self.store.mutate(rs_t, ns, r["metadata"]["name"], lambda o: o["spec"].__setitem__("replicas", 0))
        rss = self.owned_by(rs_t, d)
        tot = {
            k: sum(int((r.get("status") or {}).get(k, 0)) for r in rss)
            for k in ("replicas", "readyReplicas", "availableReplicas")
        }
        updated = int(
            ((self.store.find(rs_t, ns, cur["metadata"]["name"]) or {}).get("status") or {}).get("replicas", 0)
        )
        avail = tot["availableReplicas"] >= replicas
        old = d.get("status") or {}
        status = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": tot["replicas"],
            "updatedReplicas": updated,
            "readyReplicas": tot["readyReplicas"],
            "availableReplicas": tot["availableReplicas"],
            "unavailableReplicas": max(0, replicas - tot["availableReplicas"]),
            "conditions": _transition(
                old.get("conditions"),
                [
                    {
                        "type": "Available",
                        "status": "True" if avail else "False",
                        "reason": "MinimumReplicasAvailable" if avail else "MinimumReplicasUnavailable",
                        "message": "Deployment has minimum availability."
                        if avail
                        else "Deployment does not have minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable" if avail else "ReplicaSetUpdated",
                        "message": f'ReplicaSet "{cur["metadata"]["name"]}" is progressing.',
                    },
                ],
            ),
        }
        for c in status["conditions"]:
            c["lastUpdateTime"] = next(
                (
                    p.get("lastUpdateTime")
                    for p in old.get("conditions") or []
                    if p.get("type") == c["type"] and p.get("status") == c["status"]
                ),
                c["lastTransitionTime"],
            )
        for k in ("readyReplicas", "availableReplicas", "replicas", "updatedReplicas", "unavailableReplicas"):
            if not status[k]:
                status.pop(k)
        self.set_status(d, status)


class ReplicaSetController(Controller):
    """Keeps ``spec.replicas`` active pods named ``<rs>-<5 random>``; failed/succeeded pods
    are replaced (and left in place, as the real controller does)."""

    primary = "replicasets"

    def children(self) -> tuple[ResourceType, ...]:
        return (self.pods_t,)

    def reconcile(self, ns: str, name: str) -> None:
        rs = self.store.find(self.rtype, ns, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        spec = rs.get("spec") or {}
        want = int(spec.get("replicas", 1))
        pods = [p for p in self.owned_by(self.pods_t, rs) if pod_active(p)]
        tmpl = spec.get("template") or {}
        for _ in range(want - len(pods)):
            md = tmpl.get("metadata") or {}
            self.store.create(
                self.pods_t,
                ns,
                {
                    "metadata": {
                        "generateName": f"{name}-",
                        "labels": dict(md.get("labels") or {}),
                        "annotations": dict(md.get("annotations") or {}),
                        "ownerReferences": [owner_ref(rs)],
                    },
                    "spec": copy.deepcopy(tmpl.get("spec") or {}),
                },
            )
        if len(pods) > want:
            victims = sorted(pods, key=lambda p: (pod_ready(p), p["metadata"]["creationTimestamp"]))
            for p in victims[: len(pods) - want]:
                self.store.delete(self.pods_t, ns, p["metadata"]["name"])
        pods = [p for p in self.owned_by(self.pods_t, rs) if pod_active(p)]
        ready = sum(1 for p in pods if pod_ready(p))
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        for k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
            if not status[k]:
                status.pop(k)
        self.set_status(rs, status)


def start_controllers(store: Store, kuberay: bool = False) -> list[Controller]:
    ctrls: list[Controller] = [DeploymentController(store), ReplicaSetController(store)]
    if kuberay:
        from .kuberay import RayClusterController

        ctrls.append(RayClusterController(store))
    return ctrls
