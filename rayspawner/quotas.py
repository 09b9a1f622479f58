"""Per-user totals across all of a user's running Ray servers.

A user with named servers could otherwise hold any number of clusters, each within the
per-cluster ``ray_max_*`` limits. :func:`admit` is called by both spawners once a spawn's
:class:`~rayspawner.spec.RayClusterSpec` is validated, before anything is created: it adds
what the user's other active servers hold (pending, running or stopping) and refuses the
spawn with :class:`~rayspawner.errors.InvalidOptions` when a total would be exceeded.

Two spawns racing for the last slot: :func:`admit` is synchronous (it never awaits) and
the spawners hand what it returns to their session (``ray_session.spec``) at once, so on the hub's single
event loop no other check runs between the sum and the reservation (that spec, which
counts for as long as the server is active: pending, running or stopping). A spawn that
fails makes its server inactive, which releases it. After a hub restart, what a server holds comes from the
spawner's restored state (RaySpawner's ``ray_size``, LocalRaySpawner's nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import ConfigError, InvalidOptions
from .quantities import format_cpu, format_memory, parse_count, parse_cpu, parse_memory

#: keys of a group's entry in ``ray_user_group_limits``, and the trait each replaces
LIMIT_KEYS = {
    "clusters": "ray_user_max_clusters",
    "cpu": "ray_user_max_total_cpu",
    "memory": "ray_user_max_total_memory",
    "gpu": "ray_user_max_total_gpu",
}


@dataclass(frozen=True)
class Usage:
    """What one server's Ray cluster holds: head + workers at their maximum (``*_min``:
    at their minimum, what an idle autoscaling cluster shrinks to)."""

    server: str
    cluster: str
    cpu_millis: int = 0
    memory_bytes: int = 0
    gpu: int = 0
    cpu_millis_min: int = 0
    memory_bytes_min: int = 0
    gpu_min: int = 0
    known: bool = True

    @property
    def label(self) -> str:
        return f"server {self.server!r}" if self.server else "your default server"

    def describe(self) -> str:
        if not self.known:
            return f"{self.label} (cluster {self.cluster}, size unknown)"
        return (
            f"{self.label} (cluster {self.cluster}: {format_cpu(self.cpu_millis)} CPU, "
            f"{format_memory(self.memory_bytes)} memory, {self.gpu} GPU)"
        )


# ------------------------------------------------------------------ sizes
def spec_usage(spec: Any, server: str) -> Usage:
    total = spec.total
    lo_cpu, lo_mem, lo_gpu = spec.head.cpu_millis, spec.head.memory_bytes, spec.head.gpu
    for g in spec.worker_groups:
        lo_cpu += g.resources.cpu_millis * g.min_replicas
        lo_mem += g.resources.memory_bytes * g.min_replicas
        lo_gpu += g.resources.gpu * g.min_replicas
    return Usage(server, spec.name, total.cpu_millis, total.memory_bytes, total.gpu, lo_cpu, lo_mem, lo_gpu)


def size_usage(size: Mapping[str, Any], server: str) -> Usage:
    """From RaySpawner's stored ``ray_size`` (head and worker groups, quantities as text)."""

    def node(n: Mapping[str, Any]) -> tuple[int, int, int]:
        mem = n.get("memory") or 0
        return parse_cpu(n.get("cpu") or 0), parse_memory(mem) if mem else 0, int(n.get("gpu") or 0)

    head = node(size.get("head") or {})
    hi, lo = list(head), list(head)
    for g in size.get("workers") or []:
        res = node(g)
        top, bottom = int(g.get("max", g.get("replicas", 0))), int(g.get("min", g.get("replicas", 0)))
        for i in range(3):
            hi[i] += res[i] * top
            lo[i] += res[i] * bottom
    return Usage(server, str(size.get("cluster", "")), *hi, *lo)


def usage_of(spawner: Any) -> Usage | None:
    """What an *active* server's Ray cluster holds; None for an inactive or Ray-less one."""
    session = getattr(spawner, "ray_session", None)
    if not getattr(spawner, "active", False) or session is None:
        return None
    server = getattr(spawner, "name", "") or ""
    if session.spec is not None:
        return spec_usage(session.spec, server)
    if session.stored_size:
        try:
            return size_usage(session.stored_size, server)
        except (InvalidOptions, TypeError, ValueError):
            pass  # a state written by another version: still a cluster, size unknown
    if session.ref is not None:
        return Usage(server, session.ref.name, known=False)
    return None


def backend_of(spawner: Any) -> str:
    ref = getattr(getattr(spawner, "ray_session", None), "ref", None)
    return getattr(ref, "backend", "") or "unknown"


# ----------------------------------------------------------------- limits
def _parse(key: str, value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        if key == "cpu":
            return parse_cpu(value, where)
        if key == "memory":
            return parse_memory(value, where)
        return parse_count(value, where)
    except InvalidOptions as e:
        raise ConfigError(f"Invalid per-user Ray limit {where}: {e.message}") from None


def check_group_limits(groups: Any) -> dict:
    """Validate ``ray_user_group_limits`` (used when the configuration is loaded)."""
    if not isinstance(groups, Mapping):
        raise ConfigError("ray_user_group_limits must map group names to dicts of limits.")
    for group, limits in groups.items():
        if not isinstance(limits, Mapping):
            raise ConfigError(f"ray_user_group_limits[{group!r}] must be a dict, e.g. {{'clusters': 2, 'cpu': '16'}}.")
        unknown = sorted(set(limits) - set(LIMIT_KEYS))
        if unknown:
            raise ConfigError(
                f"ray_user_group_limits[{group!r}]: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"use {', '.join(LIMIT_KEYS)}."
            )
        for key, value in limits.items():
            _parse(key, value, f"ray_user_group_limits[{group!r}][{key!r}]")
    return dict(groups)


def _group_names(user: Any) -> list[str]:
    return [getattr(g, "name", g) for g in (getattr(user, "groups", None) or [])]


def effective_limits(cfg: Any, groups: Iterable[str]) -> dict[str, tuple[int | None, str]]:
    """``{key: (limit or None for no limit, where it comes from)}``.

    A group's entry replaces the global setting (so it can raise or lower it); when
    several of the user's groups set the same key, the most generous one wins.
    """
    result: dict[str, tuple[int | None, str]] = {}
    table = cfg.ray_user_group_limits or {}
    for key, trait in LIMIT_KEYS.items():
        found: list[tuple[int | None, str]] = []
        for group in sorted(groups):
            entry = table.get(group)
            if isinstance(entry, Mapping) and key in entry:
                found.append(
                    (_parse(key, entry[key], f"ray_user_group_limits[{group!r}][{key!r}]"), f"group {group!r}")
                )
        if found:
            result[key] = next((f for f in found if f[0] is None), None) or max(found, key=lambda f: f[0])
        else:
            result[key] = (_parse(key, getattr(cfg, trait), trait), trait)
    return result


_FORMAT = {
    "clusters": lambda n: f"{n} Ray cluster{'' if n == 1 else 's'}",
    "cpu": lambda n: f"{format_cpu(n)} CPU",
    "memory": lambda n: f"{format_memory(n)} memory",
    "gpu": lambda n: f"{n} GPU{'' if n == 1 else 's'}",
}


def _amount(key: str, u: Usage) -> int:
    return {"clusters": 1, "cpu": u.cpu_millis, "memory": u.memory_bytes, "gpu": u.gpu}[key]


def siblings_in_use(spawner: Any) -> list[Usage]:
    """What the user's other active servers hold (from ``user.spawners``)."""
    spawners = getattr(getattr(spawner, "user", None), "spawners", None) or {}
    found = []
    for other in list(spawners.values()):
        if other is spawner:
            continue
        usage = usage_of(other)
        if usage is not None:
            found.append(usage)
    return sorted(found, key=lambda u: u.server)


def admit(spawner: Any, spec: Any) -> Any:
    """Refuse ``spec`` if the user's totals would exceed a limit; else return it, for the
    caller to hand to its ``ray_session`` at once (that is the reservation).

    Must stay synchronous: no other spawn's check may run between the sum and the reservation.
    """
    # the user's groups are read only where group limits exist: with nothing configured, a spawn
    # touches nothing of the user that KubeSpawner does not (its own tests' MockUser has no groups)
    groups = _group_names(getattr(spawner, "user", None)) if spawner.ray_user_group_limits else []
    limits = effective_limits(spawner, groups)
    if any(limit is not None for limit, _ in limits.values()):
        wanted = spec_usage(spec, getattr(spawner, "name", "") or "")
        others = siblings_in_use(spawner)
        problems = []
        for key, (limit, source) in limits.items():
            if limit is None:
                continue
            in_use = sum(_amount(key, u) for u in others)
            if in_use + _amount(key, wanted) > limit:
                fmt = _FORMAT[key]
                problems.append(
                    f"{fmt(in_use + _amount(key, wanted))} with this one, over your limit of "
                    f"{fmt(limit)} ({source}; {fmt(in_use)} in use)"
                )
        if problems:
            held = "; ".join(u.describe() for u in others) or "nothing"
            raise InvalidOptions(
                "This server's Ray cluster would take your Ray use across all your servers to "
                + "; and ".join(problems)
                + f". In use now: {held}. Stop one of your other servers, "
                "or choose a smaller profile.",
                reason="user_quota",
            )
    return spec


def size_sentence(spec: Any, autoscaled: bool) -> str:
    """What the cluster holds, for the spawn's closing message: ``It holds 3 CPU, 6Gi memory
    (head + 2 workers).``; ``autoscaled`` (a KubeRay cluster whose profile sets min < max):
    ``... 1–9 CPU ... (head + 0–4 workers, idle workers removed).`` Without autoscaling the
    workers are fixed at their ``replicas``, whatever min and max say."""
    if not autoscaled:
        cpu, mem, gpus = spec.head.cpu_millis, spec.head.memory_bytes, spec.head.gpu
        for g in spec.worker_groups:
            cpu += g.resources.cpu_millis * g.replicas
            mem += g.resources.memory_bytes * g.replicas
            gpus += g.resources.gpu * g.replicas
        n = spec.desired_workers
        gpu = f", {gpus} GPU{'' if gpus == 1 else 's'}" if gpus else ""
        workers = f"{n} worker{'' if n == 1 else 's'}"
        return f"It holds {format_cpu(cpu)} CPU, {format_memory(mem)} memory{gpu} (head + {workers})."
    u = spec_usage(spec, "")
    lo, hi = sum(g.min_replicas for g in spec.worker_groups), sum(g.max_replicas for g in spec.worker_groups)
    low_gpu = f"{u.gpu_min}–" if u.gpu else ""
    gpu = f", {low_gpu}{u.gpu} GPUs" if u.gpu else ""
    return (
        f"It holds {format_cpu(u.cpu_millis_min)}–{format_cpu(u.cpu_millis)} CPU, "
        f"{format_memory(u.memory_bytes_min)}–{format_memory(u.memory_bytes)} memory{gpu} "
        f"(head + {lo}–{hi} workers, idle workers removed)."
    )
