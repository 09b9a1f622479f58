"""What a Ray cluster holds, in words: the hub's home page and the spawn form (read-only).

:func:`cluster_summary` looks at a spawner object and returns its cluster's name, size
and dashboard path, or ``None`` for a server without a running Ray cluster. It makes
no API call and changes nothing. :func:`idle_sentence` says what a cluster of a given
spec holds while idle, on a given backend (the spawn form shows it for each Ray profile).
The size comes from the spec of the spawn this hub process ran, or, after a hub restart,
from the spawner's restored state (RaySpawner keeps a small ``ray_size`` there;
LocalRaySpawner's nodes carry their resources).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .env import DASHBOARD_PROXY_SUFFIX
from .quantities import format_cpu, format_memory
from .quotas import spec_usage
from .spec import RayClusterSpec, Resources


def _node(res: Resources) -> dict[str, Any]:
    return {"cpu": res.cpu, "memory": res.memory, "gpu": res.gpu}


def spec_size(spec: RayClusterSpec) -> dict[str, Any]:
    """A small JSON-able size of the cluster (kept in RaySpawner's state)."""
    return {
        "cluster": spec.name,
        "head": _node(spec.head),
        "workers": [
            {
                "group": g.name,
                "replicas": g.replicas,
                "min": g.min_replicas,
                "max": g.max_replicas,
                **_node(g.resources),
            }
            for g in spec.worker_groups
            if g.max_replicas
        ],
    }


def local_size(cluster: Any) -> dict[str, Any]:
    """The size of a local cluster restored from state (its nodes as started)."""
    head: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for node in getattr(cluster, "nodes", ()):
        memory = int(getattr(node, "memory_bytes", 0) or 0) + int(getattr(node, "object_store_bytes", 0) or 0)
        res = {
            "cpu": format_cpu(int(node.num_cpus) * 1000),
            "memory": format_memory(memory) if memory else "",
            "gpu": int(getattr(node, "num_gpus", 0) or 0),
        }
        if node.role == "head":
            head = res
            continue
        group = node.role.rsplit("-", 1)[0]
        entry = groups.setdefault(group, {"group": group, "replicas": 0, **res})
        entry["replicas"] += 1
    for entry in groups.values():
        entry["min"] = entry["max"] = entry["replicas"]
    return {"cluster": getattr(cluster, "name", ""), "head": head, "workers": list(groups.values())}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _memory(text: str) -> str:
    # "2Gi" → "2 GiB": how the profiles and the docs write sizes for people
    for unit in ("Ki", "Mi", "Gi", "Ti"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return f"{text[: -len(unit)]} {unit}B"
    return text


def _resources(node: dict[str, Any]) -> str:
    parts = [f"{node.get('cpu', '?')} CPU"]
    if node.get("memory"):
        parts.append(_memory(node["memory"]))
    if node.get("gpu"):
        parts.append(_plural(int(node["gpu"]), "GPU"))
    return ", ".join(parts)


def describe(size: dict[str, Any]) -> str:
    """``head 1 CPU, 1 GiB · 2 workers × 1 CPU, 1 GiB`` (autoscaling: ``1–4 workers``)."""
    parts = [f"head {_resources(size.get('head') or {})}"]
    workers = size.get("workers") or []
    for g in workers:
        word = "GPU worker" if g.get("group") == "gpu-workers" else "worker"
        lo, hi = int(g.get("min", g["replicas"])), int(g.get("max", g["replicas"]))
        count = f"{lo}–{hi} {word}s" if lo < hi else _plural(hi, word)
        parts.append(f"{count} × {_resources(g)}")
    if not workers:
        parts.append("no workers")
    return " · ".join(parts)


def _size(spawner: Any) -> dict[str, Any] | None:
    session = getattr(spawner, "ray_session", None)
    return session.size() if session is not None else None


def cluster_summary(spawner: Any) -> dict[str, Any] | None:
    """The Ray cluster of an active server: name, size, dashboard path; else ``None``."""
    if not getattr(spawner, "active", False):
        return None
    size = _size(spawner)
    if not size:
        return None
    name = spawner.name or ""
    pending = spawner.pending or ""
    return {
        "server": name,
        "server_label": (getattr(spawner, "display_name", "") or name) if name else "Default server",
        "cluster": size.get("cluster", ""),
        "size": size,
        "text": describe(size),
        "ready": bool(spawner.ready),
        "pending": pending,
        "dashboard_url": spawner.user.server_url(name) + DASHBOARD_PROXY_SUFFIX,
    }


# ------------------------------------------------------------------ while idle
def _pinned(spec: RayClusterSpec, counts: list[int]) -> RayClusterSpec:
    """The spec with each worker group fixed at ``counts`` (what a cluster holds at one moment)."""
    groups = tuple(
        dataclasses.replace(g, replicas=n, min_replicas=n, max_replicas=n) for g, n in zip(spec.worker_groups, counts)
    )
    return dataclasses.replace(spec, worker_groups=groups, autoscaling=False)


def _held(spec: RayClusterSpec) -> str:
    """``3 CPU, 3 GiB (head 1 CPU, 1 GiB · 2 workers × 1 CPU, 1 GiB)`` for a pinned spec."""
    u = spec_usage(spec, "")
    total = [f"{format_cpu(u.cpu_millis)} CPU", _memory(format_memory(u.memory_bytes))]
    if u.gpu:
        total.append(_plural(u.gpu, "GPU"))
    return f"{', '.join(total)} ({describe(spec_size(spec))})"


def shrinks_when_idle(spec: RayClusterSpec, backend: str) -> bool:
    """Whether idle workers are removed: KubeRay's autoscaler, on when min < max. The pods and
    local backends always run ``replicas`` workers; ``auto`` may become either."""
    return spec.autoscaling and backend in ("kuberay", "auto")


def idle_sentence(spec: RayClusterSpec, backend: str) -> str:
    """What the cluster holds while nobody uses it, in plain words, for the spawn form.

    ``backend``: ``local``, ``pods``, ``kuberay``, or ``auto`` (not known before the spawn:
    both cases are said when they differ)."""
    fixed = _held(_pinned(spec, [g.replicas for g in spec.worker_groups]))
    keeps = f"while idle, this cluster still holds {fixed} until the server stops or is culled."
    if not shrinks_when_idle(spec, backend):
        return keeps[0].upper() + keeps[1:]
    low = _held(_pinned(spec, [g.min_replicas for g in spec.worker_groups]))
    most = sum(g.max_replicas for g in spec.worker_groups)
    shrinks = (
        f"While idle, this cluster shrinks: workers idle for {spec.idle_timeout_seconds} s are removed, "
        f"down to {low}; work brings workers back, up to {_plural(most, 'worker')}. Everything goes when the server "
        "stops or is culled."
    )
    if backend == "kuberay":
        return shrinks
    return f"On KubeRay, {shrinks[0].lower()}{shrinks[1:]} Without KubeRay (plain pods), {keeps}"


def idle_hint(shrinks: bool) -> str:
    """The same without numbers, for sizes typed into a free-entry field."""
    if shrinks:
        return (
            "While idle, its idle workers are removed down to the minimum; the head stays until the "
            "server stops or is culled."
        )
    return "While idle, it keeps its head and all of its workers until the server stops or is culled."
