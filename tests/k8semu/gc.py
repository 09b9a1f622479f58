"""Kubernetes' garbage collector, for the Store: ownerReferences (background and foreground
deletion, orphaning) and namespace deletion. A mixin: it works on the Store's objects."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .errors import ApiError
from .resources import ResourceType

log = logging.getLogger("k8semu.store")


class GarbageCollector:
    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        out = []
        for rtype in self.registry.types:
            for obj in self._bucket(rtype).values():
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    out.append((rtype, obj))
        return out

    def _orphan_dependents(self, uid: str) -> None:
        for rtype, obj in self._dependents(uid):

            def drop(o: dict[str, Any]) -> None:
                refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if refs:
                    o["metadata"]["ownerReferences"] = refs
                else:
                    o["metadata"].pop("ownerReferences", None)

            self.mutate(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"], drop)

    # ---- garbage collection --------------------------------------------
    def schedule_gc(self) -> None:
        if not self._gc_scheduled:
            self._gc_scheduled = True
            asyncio.get_event_loop().call_soon(self._gc_sweep)

    def _owner_exists(self, ref: dict[str, Any]) -> bool:
        api_version, kind = ref.get("apiVersion", ""), ref.get("kind", "")
        if self.registry.by_kind(api_version, kind) is None:
            return True  # kinds the emulator does not serve are assumed to exist
        return ref.get("uid") in self.uids

    def _gc_sweep(self) -> None:
        self._gc_scheduled = False
        for rtype in self.registry.types:
            for obj in list(self._bucket(rtype).values()):
                md = obj["metadata"]
                refs = md.get("ownerReferences") or []
                if refs:
                    alive = [r for r in refs if self._owner_exists(r)]
                    if not alive and not md.get("deletionTimestamp"):
                        log.debug("gc: deleting %s %s/%s", rtype.kind, md.get("namespace"), md["name"])
                        self._safe_delete(rtype, obj, "Background")
                    elif alive and len(alive) != len(refs):
                        self.mutate(
                            rtype,
                            md.get("namespace"),
                            md["name"],
                            lambda o, a=alive: o["metadata"].__setitem__("ownerReferences", a),
                        )
                if md.get("deletionTimestamp") and "foregroundDeletion" in (md.get("finalizers") or []):
                    deps = self._dependents(md["uid"])
                    for drt, dep in deps:
                        if not dep["metadata"].get("deletionTimestamp"):
                            self._safe_delete(drt, dep, "Foreground")
                    if not deps:
                        self.mutate(rtype, md.get("namespace"), md["name"], _drop_foreground)
                if rtype.plural == "namespaces" and md.get("deletionTimestamp"):
                    remaining = 0
                    for t in self.registry.types:
                        if not t.namespaced:
                            continue
                        for o in list(self._bucket(t).values()):
                            if o["metadata"].get("namespace") == md["name"]:
                                remaining += 1
                                if not o["metadata"].get("deletionTimestamp"):
                                    self._safe_delete(t, o, "Background")
                    if remaining == 0:
                        self._remove(rtype, obj)

    def _safe_delete(self, rtype: ResourceType, obj: dict[str, Any], propagation: str) -> None:
        try:
            self.delete(
                rtype,
                obj["metadata"].get("namespace"),
                obj["metadata"]["name"],
                propagation=propagation,
                preconditions={"uid": obj["metadata"]["uid"]},
            )
        except ApiError as e:
            log.debug("gc delete failed: %s", e)


def _drop_foreground(o: dict[str, Any]) -> None:
    fins = [f for f in o["metadata"].get("finalizers") or [] if f != "foregroundDeletion"]
    if fins:
        o["metadata"]["finalizers"] = fins
    else:
        o["metadata"].pop("finalizers", None)
