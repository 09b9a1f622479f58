"""Server-side printing (``meta.k8s.io/v1`` Table) for ``kubectl get``, like the real columns."""

from __future__ import annotations

import datetime
from typing import Any, Callable

from .resources import ResourceType


def _age(obj: dict[str, Any]) -> str:
    ts = obj["metadata"].get("creationTimestamp")
    if not ts:
        return "<unknown>"
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    s = max(0, int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m" if (s % 3600) // 60 else f"{s // 3600}h"
    return f"{s // 86400}d"


def _pod_status(p: dict[str, Any]) -> str:
    if p["metadata"].get("deletionTimestamp"):
        return "Terminating"
    st = p.get("status") or {}
    for cs in st.get("initContainerStatuses") or []:
        w = (cs.get("state") or {}).get("waiting")
        if w and w.get("reason") not in ("PodInitializing",):
            return f"Init:{w.get('reason')}"
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting") and state["waiting"].get("reason"):
            return state["waiting"]["reason"]
        if state.get("terminated") and st.get("phase") != "Running":
            return state["terminated"].get("reason") or "Terminated"
    return st.get("phase") or "Pending"


def _pod_cells(p: dict[str, Any]) -> list[Any]:
    st = p.get("status") or {}
    css = st.get("containerStatuses") or []
    total = len((p.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in css if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in css)
    return [
        p["metadata"]["name"],
        f"{ready}/{total}",
        _pod_status(p),
        restarts,
        _age(p),
        st.get("podIP") or "<none>",
        (p.get("spec") or {}).get("nodeName") or "<none>",
    ]


def _svc_cells(s: dict[str, Any]) -> list[Any]:
    spec = s.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    return [
        s["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        "<none>",
        ports,
        _age(s),
    ]


def _deploy_cells(d: dict[str, Any]) -> list[Any]:
    st = d.get("status") or {}
    want = int((d.get("spec") or {}).get("replicas", 1))
    return [
        d["metadata"]["name"],
        f"{st.get('readyReplicas', 0)}/{want}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        _age(d),
    ]


def _rs_cells(r: dict[str, Any]) -> list[Any]:
    st = r.get("status") or {}
    return [
        r["metadata"]["name"],
        int((r.get("spec") or {}).get("replicas", 1)),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        _age(r),
    ]


def _rc_cells(r: dict[str, Any]) -> list[Any]:
    st = r.get("status") or {}
    return [
        r["metadata"]["name"],
        st.get("desiredWorkerReplicas", 0),
        st.get("availableWorkerReplicas", 0),
        st.get("desiredCPU", "0"),
        st.get("desiredMemory", "0"),
        st.get("desiredGPU", "0"),
        st.get("state", ""),
        _age(r),
    ]


def _col(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": name, "priority": priority}


COLUMNS: dict[str, tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]] = {
    "pods": (
        [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Status"),
            _col("Restarts", "integer"),
            _col("Age"),
            _col("IP", priority=1),
            _col("Node", priority=1),
        ],
        _pod_cells,
    ),
    "services": (
        [_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), _col("Age")],
        _svc_cells,
    ),
    "deployments": (
        [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Up-to-date", "integer"),
            _col("Available", "integer"),
            _col("Age"),
        ],
        _deploy_cells,
    ),
    "replicasets": (
        [
            _col("Name", fmt="name"),
            _col("Desired", "integer"),
            _col("Current", "integer"),
            _col("Ready", "integer"),
            _col("Age"),
        ],
        _rs_cells,
    ),
    "rayclusters": (
        [
            _col("Name", fmt="name"),
            _col("desired workers", "integer"),
            _col("available workers", "integer"),
            _col("cpus"),
            _col("memory"),
            _col("gpus"),
            _col("status"),
            _col("age"),
        ],
        _rc_cells,
    ),
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def table(rtype: ResourceType, objs: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    cols, cells = COLUMNS.get(
        rtype.plural, ([_col("Name", fmt="name"), _col("Age")], lambda o: [o["metadata"]["name"], _age(o)])
    )
    rows = [
        {
            "cells": cells(o),
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
        }
        for o in objs
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": cols,
        "rows": rows,
    }
