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

``secrets="by-name"`` (``ray_orphan_sweep_secrets``) never lists Secrets, so the
hub's Role needs no ``list`` on them (that would read every Secret in the
namespace). In that mode the token Secret is created owned by its notebook pod,
so it is never ownerless; the garbage collector removes it with the pod, and the
sweep covers a delayed GC by reading ``<cluster>-ray-token`` by name for each
cluster that has an orphan among the listed kinds (the cluster's NetworkPolicy
is created before its Secret, so there is one to find).
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
#: the same without RayCluster, where KubeRay (its CRD) is not installed
BUILTIN_KINDS = SWEPT_KINDS[1:]


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


def orphan_clusters(orphans: Iterable[Mapping[str, Any]]) -> list[str]:
    """The cluster names (``ray.io/cluster`` labels) of orphans, each once, in order."""
    names: dict[str, None] = {}
    for obj in orphans:
        name = ((obj.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_CLUSTER)
        if name:
            names[name] = None
    return list(names)


async def _secrets_by_name(
    kube: Any,
    namespace: str,
    clusters: Iterable[str],
    live_pod_uids: set[str],
    now: dt.datetime,
    grace_seconds: float,
) -> list[Mapping[str, Any]]:
    """The orphaned token Secrets of these clusters, each read by its name (no list)."""
    found = []
    for cluster in clusters:
        secret = await kube.get("Secret", namespace, naming.token_secret(cluster))
        if secret is None:
            continue
        if ((secret.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_CLUSTER) != cluster:
            continue  # a Secret of that name that is not this cluster's token
        found.extend(find_orphans([secret], live_pod_uids, now, grace_seconds))
    return found


async def sweep(
    kube: Any,
    namespace: str,
    live_pod_uids: set[str],
    *,
    kinds: Iterable[str] = SWEPT_KINDS,
    grace_seconds: float = 300,
    secrets: str = "list",
) -> list[tuple[str, str]]:
    """Find the orphans among rayspawner objects in ``namespace`` and delete them, in
    ``kinds`` order. Returns (kind, name) deleted.

    ``secrets``: "list" lists Secrets like every other kind; "by-name" never lists
    them and reads the token Secret of each cluster with an orphan instead."""
    if secrets not in ("list", "by-name"):
        raise ValueError(f"secrets must be 'list' or 'by-name', not {secrets!r}")
    kinds = list(kinds)
    now = dt.datetime.now(dt.timezone.utc)
    orphans: dict[str, list[Mapping[str, Any]]] = {}
    for kind in kinds:
        if kind == "Secret" and secrets == "by-name":
            continue
        objects = await kube.list(kind, namespace, naming.MANAGED_SELECTOR)
        orphans[kind] = find_orphans(objects, live_pod_uids, now, grace_seconds)
    if "Secret" in kinds and secrets == "by-name":
        clusters = orphan_clusters(o for found in orphans.values() for o in found)
        orphans["Secret"] = await _secrets_by_name(kube, namespace, clusters, live_pod_uids, now, grace_seconds)
    deleted = []
    for kind in kinds:
        for obj in orphans.get(kind, []):
            name = obj["metadata"]["name"]
            log.warning("Orphan sweep: deleting %s %s/%s (its notebook pod is gone)", kind, namespace, name)
            await kube.delete(kind, namespace, name)
            deleted.append((kind, name))
    return deleted
