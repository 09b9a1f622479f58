"""The orphan sweep: remove rayspawner objects whose notebook pod is gone.

Kubernetes' garbage collector removes Ray objects when their owner (the
notebook pod) is deleted. Two things it cannot cover are swept here:

- an object with *no* owner: the token Secret is created a moment before the
  notebook pod exists, so a hub that dies in that moment leaves it ownerless;
- a cluster whose GC is delayed or disabled (e.g. a namespace without a GC'd
  owner relationship after a restore).

Only objects labelled ``app.kubernetes.io/managed-by=rayspawner`` are ever
considered; everything else is never touched. The decision is a pure function
(:func:`find_orphans`) so it is tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from . import naming

log = logging.getLogger(__name__)

#: kinds swept, in deletion order (owners of pods first)
SWEPT_KINDS = ("RayCluster", "Deployment", "Pod", "Service", "NetworkPolicy", "Secret")


def _age_seconds(obj: Mapping[str, Any], now: dt.datetime) -> float:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return 0.0
    if isinstance(created, dt.datetime):
        when = created
    else:
        when = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return (now - when).total_seconds()


def find_orphans(
    objects: Iterable[Mapping[str, Any]],
    live_pod_uids: set[str],
    now: dt.datetime,
    grace_seconds: float = 300,
) -> list[Mapping[str, Any]]:
    """The rayspawner objects to delete.

    - owned by a Pod whose uid is not live → orphan;
    - no ownerReferences at all → orphan;
    - either only once older than ``grace_seconds`` (a spawn in progress creates
      its Secret just before its pod, and a reflector may lag behind a new pod);
    - owned by something else (a ReplicaSet, a RayCluster) → left to the GC;
    - not labelled managed-by=rayspawner → never.
    """
    orphans = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        if (meta.get("labels") or {}).get(naming.LABEL_MANAGED_BY) != naming.MANAGED_BY:
            continue
        if meta.get("deletionTimestamp"):
            continue
        if _age_seconds(obj, now) <= grace_seconds:
            continue
        owners = meta.get("ownerReferences") or []
        if not owners:
            orphans.append(obj)
            continue
        pod_owners = [o for o in owners if o.get("kind") == "Pod"]
        if pod_owners and not any(o.get("uid") in live_pod_uids for o in pod_owners):
            orphans.append(obj)
    return orphans


async def sweep(
    kube: Any,
    namespace: str,
    live_pod_uids: set[str],
    *,
    kinds: Iterable[str] = SWEPT_KINDS,
    grace_seconds: float = 300,
) -> list[tuple[str, str]]:
    """List rayspawner objects in ``namespace`` and delete the orphans. Returns (kind, name) deleted."""
    now = dt.datetime.now(dt.timezone.utc)
    deleted = []
    for kind in kinds:
        objects = await kube.list(kind, namespace, naming.MANAGED_SELECTOR)
        for obj in find_orphans(objects, live_pod_uids, now, grace_seconds):
            name = obj["metadata"]["name"]
            log.warning("Orphan sweep: deleting %s %s/%s (its notebook pod is gone)", kind, namespace, name)
            await kube.delete(kind, namespace, name)
            deleted.append((kind, name))
    return deleted
