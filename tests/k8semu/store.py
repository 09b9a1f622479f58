"""The object store: objects, resourceVersions, watch fan-out, deletion and GC.

Every method runs on the emulator's event loop (single-threaded; no locks).
Stored object dicts are never mutated in place: each write stores a new dict, so
watch history entries can share them.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from . import errors
from .errors import ApiError
from .gc import GarbageCollector
from .resources import Registry, ResourceType, label_errors, name_errors, now_iso, random_suffix
from .selectors import Requirement, fields_match, labels_match

log = logging.getLogger("k8semu.store")

Key = tuple[str, str]  # (namespace or "", name)
Listener = Callable[[str, ResourceType, dict[str, Any], "dict[str, Any] | None"], None]

SERVER_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")


@dataclass
class Event:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    rtype: ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass(eq=False)
class Watch:
    """One open watch; the server handler drains ``queue`` ((type, obj) or None = end)."""

    rtype: ResourceType
    namespace: str | None
    labels: list[Requirement]
    fields: list[tuple[str, str, str]]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def _match(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj["metadata"].get("labels")) and fields_match(self.fields, obj)

    def offer(self, ev: Event) -> None:
        if ev.rtype is not self.rtype:
            return
        new_ok = self._match(ev.obj)
        if ev.type == "DELETED":
            if new_ok:
                self.queue.put_nowait(("DELETED", ev.obj))
            return
        old_ok = self._match(ev.old)
        if new_ok and (ev.type == "ADDED" or not old_ok):
            self.queue.put_nowait(("ADDED", ev.obj))
        elif new_ok:
            self.queue.put_nowait(("MODIFIED", ev.obj))
        elif old_ok:
            self.queue.put_nowait(("DELETED", ev.obj))


class Store(GarbageCollector):
    def __init__(
        self,
        registry: Registry,
        history_size: int = 20000,
        namespaces: tuple[str, ...] = ("default", "kube-system", "kube-public"),
    ) -> None:
        self.registry = registry
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {t.key: {} for t in registry.types}
        self.uids: dict[str, tuple[ResourceType, Key]] = {}
        self.rv = 0
        self.history: collections.deque[Event] = collections.deque(maxlen=history_size)
        self.compacted_rv = 0
        self.watches: set[Watch] = set()
        self.listeners: list[Listener] = []
        # async (pod, grace) -> None: stops a bound pod's containers (set by the emulator)
        self.pod_killer: Callable[[dict[str, Any], int], Awaitable[None]] | None = None
        self._gc_scheduled = False
        self._next_cluster_ip = 0
        self._terminating: set[str] = set()  # uids of pods whose kill is pending
        self._tasks: set[asyncio.Task] = set()
        ns_type = registry.by_name("namespaces")
        for ns in namespaces:
            self._insert(ns_type, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # ---- helpers -------------------------------------------------------
    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _bucket(self, rtype: ResourceType) -> dict[Key, dict[str, Any]]:
        return self.objects[rtype.key]

    @staticmethod
    def _key(rtype: ResourceType, ns: str | None, name: str) -> Key:
        return ((ns or "") if rtype.namespaced else "", name)

    def _emit(self, type_: str, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ev = Event(int(obj["metadata"]["resourceVersion"]), type_, rtype, obj, old)
        if len(self.history) == self.history.maxlen:
            self.compacted_rv = self.history[0].rv
        self.history.append(ev)
        for w in list(self.watches):
            w.offer(ev)
        for fn in list(self.listeners):
            try:
                fn(type_, rtype, obj, old)
            except Exception:  # a listener must never break the store
                log.exception("listener failed")

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def find(self, rtype: ResourceType, ns: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (not a copy; do not mutate) or None."""
        return self._bucket(rtype).get(self._key(rtype, ns, name))

    def by_uid(self, uid: str) -> dict[str, Any] | None:
        hit = self.uids.get(uid)
        return self._bucket(hit[0]).get(hit[1]) if hit else None

    # ---- reads ----------------------------------------------------------
    def get(self, rtype: ResourceType, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.find(rtype, ns, name)
        if obj is None:
            raise errors.not_found(rtype, name)
        return copy.deepcopy(obj)

    def select(
        self,
        rtype: ResourceType,
        ns: str | None,
        labels: list[Requirement] | None = None,
        fields: list[tuple[str, str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Matching stored objects (not copies), ordered by namespace/name."""
        out = []
        for (ons, _), obj in sorted(self._bucket(rtype).items()):
            if ns and rtype.namespaced and ons != ns:
                continue
            if labels and not labels_match(labels, obj["metadata"].get("labels")):
                continue
            if fields and not fields_match(fields, obj):
                continue
            out.append(obj)
        return out

    def list(
        self,
        rtype: ResourceType,
        ns: str | None,
        labels: list[Requirement] | None = None,
        fields: list[tuple[str, str, str]] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        return copy.deepcopy(self.select(rtype, ns, labels, fields)), self.rv

    def watch(
        self,
        rtype: ResourceType,
        ns: str | None,
        labels: list[Requirement],
        fields: list[tuple[str, str, str]],
        resource_version: str | None,
    ) -> Watch:
        w = Watch(rtype, ns, labels, fields)
        if resource_version in (None, "", "0"):
            for obj in sorted(
                self.select(rtype, ns, labels, fields), key=lambda o: int(o["metadata"]["resourceVersion"])
            ):
                w.queue.put_nowait(("ADDED", obj))
        else:
            try:
                rv = int(resource_version)
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{resource_version}"') from None
            if rv < self.compacted_rv:
                raise errors.gone(f"too old resource version: {rv} ({self.compacted_rv})")
            for ev in self.history:
                if ev.rv > rv:
                    w.offer(ev)
        self.watches.add(w)
        return w

    def unwatch(self, w: Watch) -> None:
        self.watches.discard(w)

    # ---- writes ---------------------------------------------------------
    def _validate(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        name = md.get("name") or ""
        causes: list[tuple[str, str | None, str]] = []
        if not name:
            causes.append(("metadata.name", None, "name or generateName is required"))
        else:
            causes += [("metadata.name", name, m) for m in name_errors(rtype, name)]
        causes += label_errors(md.get("labels") or {})
        if rtype.plural == "pods":
            spec = obj.get("spec") or {}
            if not spec.get("containers"):
                causes.append(("spec.containers", None, ""))
            for i, c in enumerate(spec.get("containers") or []):
                if not c.get("name"):
                    causes.append((f"spec.containers[{i}].name", None, ""))
                if not c.get("image"):
                    causes.append((f"spec.containers[{i}].image", None, ""))
        if causes:
            raise errors.invalid(rtype, name, causes)

    def _ensure_namespace(self, ns: str) -> None:
        ns_type = self.registry.by_name("namespaces")
        cur = self.find(ns_type, None, ns)
        if cur is None:
            self.create(ns_type, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        elif cur["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {ns} because it is being terminated",
                {"name": ns, "kind": "namespaces"},
            )

    def _insert(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        md = obj["metadata"]
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_iso()
        md["resourceVersion"] = str(self._next_rv())
        if rtype.plural not in (
            "pods",
            "events",
            "secrets",
            "configmaps",
            "namespaces",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "clusterroles",
            "clusterrolebindings",
        ):
            md["generation"] = 1
        if rtype.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        self._bucket(rtype)[self._key(rtype, md.get("namespace"), md["name"])] = obj
        self.uids[md["uid"]] = (rtype, self._key(rtype, md.get("namespace"), md["name"]))
        self._emit("ADDED", rtype, obj, None)
        if md.get("ownerReferences"):
            self.schedule_gc()
        return obj

    def create(self, rtype: ResourceType, ns: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        for f in SERVER_FIELDS + ("resourceVersion", "managedFields", "selfLink"):
            md.pop(f, None)
        if rtype.namespaced:
            ns = ns or md.get("namespace") or "default"
            if md.get("namespace") and md["namespace"] != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        if not md.get("name") and md.get("generateName"):
            for _ in range(20):
                md["name"] = md["generateName"] + random_suffix()
                if self.find(rtype, ns, md["name"]) is None:
                    break
        self._validate(rtype, obj)
        if self.find(rtype, ns, md["name"]) is not None:
            raise errors.already_exists(rtype, md["name"])
        if rtype.namespaced:
            self._ensure_namespace(ns)
        if rtype.has_status and rtype.plural != "namespaces":
            obj.pop("status", None)
        if rtype.plural == "pods":
            obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            spec.setdefault("securityContext", {})
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("priority", 0)
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                c.setdefault(
                    "imagePullPolicy",
                    "Always"
                    if c.get("image", "").endswith(":latest") or ":" not in c.get("image", "")
                    else "IfNotPresent",
                )
                c.setdefault("terminationMessagePath", "/dev/termination-log")
        if rtype.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if not spec.get("clusterIP"):
                n = self._next_cluster_ip
                self._next_cluster_ip += 1
                spec["clusterIP"] = f"10.96.{(n // 250) % 250}.{n % 250 + 2}"
            if spec["clusterIP"] != "None":
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        if rtype.plural == "events":
            obj.setdefault("count", 1)
        return copy.deepcopy(self._insert(rtype, obj))

    def update(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        body: dict[str, Any],
        subresource: str | None = None,
        check_rv: bool = True,
    ) -> dict[str, Any]:
        """Replace an object (PUT semantics; also the last step of PATCH)."""
        cur = self.find(rtype, ns, name)
        if cur is None:
            raise errors.not_found(rtype, name)
        new = copy.deepcopy(body)
        md = new.setdefault("metadata", {})
        if md.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({md.get('name')}) does not match the name on the URL ({name})"
            )
        if check_rv and md.get("resourceVersion") and md["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise errors.conflict(
                rtype,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if subresource == "status":
            merged = copy.deepcopy(cur)
            merged["status"] = new.get("status")
            new = merged
        else:
            if rtype.has_status and rtype.plural != "namespaces":
                if "status" in cur:
                    new["status"] = copy.deepcopy(cur["status"])
                else:
                    new.pop("status", None)
            md["name"] = name
            if rtype.namespaced:
                md["namespace"] = cur["metadata"]["namespace"]
            for f in SERVER_FIELDS:
                if f in cur["metadata"]:
                    md[f] = cur["metadata"][f]
                else:
                    md.pop(f, None)
            md.pop("managedFields", None)
            self._validate(rtype, new)
        return copy.deepcopy(self._store_update(rtype, cur, new))

    def _store_update(self, rtype: ResourceType, cur: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        if new == cur:
            return cur
        spec_keys = {k for k in set(new) | set(cur) if k not in ("metadata", "status", "apiVersion", "kind")}
        if "generation" in cur["metadata"] and any(new.get(k) != cur.get(k) for k in spec_keys):
            new["metadata"]["generation"] = cur["metadata"]["generation"] + 1
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self._bucket(rtype)[self._key(rtype, cur["metadata"].get("namespace"), cur["metadata"]["name"])] = new
        self._emit("MODIFIED", rtype, new, cur)
        if (
            new["metadata"].get("deletionTimestamp")
            and not new["metadata"].get("finalizers")
            and rtype.plural != "namespaces"
        ):  # namespaces go once empty (GC sweep)
            if new["metadata"]["uid"] not in self._terminating:
                self._remove(rtype, new)
        if new["metadata"].get("ownerReferences") != cur["metadata"].get("ownerReferences"):
            self.schedule_gc()
        return new

    def mutate(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        fn: Callable[[dict[str, Any]], None],
        uid: str | None = None,
    ) -> dict[str, Any] | None:
        """Internal write (controllers, kubelet): ``fn`` edits a copy in place. None if gone."""
        cur = self.find(rtype, ns, name)
        if cur is None or (uid and cur["metadata"]["uid"] != uid):
            return None
        new = copy.deepcopy(cur)
        fn(new)
        return self._store_update(rtype, cur, new)

    # ---- deletion -------------------------------------------------------
    def _remove(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        key = self._key(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        cur = self._bucket(rtype).get(key)
        if cur is None or cur["metadata"]["uid"] != obj["metadata"]["uid"]:
            return
        del self._bucket(rtype)[key]
        self.uids.pop(cur["metadata"]["uid"], None)
        final = copy.deepcopy(cur)
        final["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit("DELETED", rtype, final, cur)
        self.schedule_gc()

    def delete(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        grace: int | None = None,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Delete; returns (object as now/last seen, removed_immediately)."""
        cur = self.find(rtype, ns, name)
        if cur is None:
            raise errors.not_found(rtype, name)
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
            raise errors.conflict(
                rtype,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {cur['metadata']['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype, name, "Precondition failed: resourceVersion mismatch")
        propagation = propagation or "Background"
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise errors.invalid(rtype, name, [("propagationPolicy", propagation, "unsupported value")])
        uid = cur["metadata"]["uid"]
        if uid in self._terminating and grace != 0:
            return copy.deepcopy(cur), False
        if propagation == "Orphan":
            self._orphan_dependents(uid)
        finalizers = list(cur["metadata"].get("finalizers") or [])
        if propagation == "Foreground" and self._dependents(uid) and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        is_pod_kill = (
            rtype.plural == "pods"
            and self.pod_killer is not None
            and (cur.get("spec") or {}).get("nodeName")
            and uid not in self._terminating
            and (cur.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
        if grace is None and rtype.plural == "pods":
            grace = int((cur.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        graceful = is_pod_kill and grace and grace > 0
        if finalizers or graceful or rtype.plural == "namespaces":
            if cur["metadata"].get("deletionTimestamp"):
                if not graceful:
                    return copy.deepcopy(cur), False

            def mark(o: dict[str, Any]) -> None:
                m = o["metadata"]
                if not m.get("deletionTimestamp"):
                    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=grace or 0)
                    m["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                    m["deletionGracePeriodSeconds"] = int(grace or 0)
                if finalizers:
                    m["finalizers"] = finalizers
                if rtype.plural == "namespaces":
                    o["status"] = {"phase": "Terminating"}

            if is_pod_kill:
                self._terminating.add(uid)
            new = self.mutate(rtype, ns, name, mark)
            if is_pod_kill:
                self.spawn(self._kill_then_remove(rtype, new or cur, int(grace or 0)))
            if propagation == "Foreground" or rtype.plural == "namespaces":
                self.schedule_gc()
            return copy.deepcopy(new or cur), False
        if is_pod_kill:  # grace 0: force delete, kill in the background
            self.spawn(self._safe_kill(cur, 0))
        self._remove(rtype, cur)
        return copy.deepcopy(cur), True

    async def _safe_kill(self, pod: dict[str, Any], grace: int) -> None:
        try:
            assert self.pod_killer is not None
            await asyncio.wait_for(self.pod_killer(pod, grace), timeout=grace + 5)
        except Exception:
            log.exception("killing pod %s/%s failed", pod["metadata"].get("namespace"), pod["metadata"]["name"])

    async def _kill_then_remove(self, rtype: ResourceType, pod: dict[str, Any], grace: int) -> None:
        uid = pod["metadata"]["uid"]
        try:
            await self._safe_kill(pod, grace)
        finally:
            self._terminating.discard(uid)
            cur = self.by_uid(uid)
            if cur is not None and not cur["metadata"].get("finalizers"):
                self._remove(rtype, cur)

    async def aclose(self) -> None:
        for w in list(self.watches):
            w.queue.put_nowait(None)
        self.watches.clear()
        for t in list(self._tasks):
            t.cancel()
