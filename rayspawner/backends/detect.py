"""Which Kubernetes backend to use: ``ray_backend`` = auto | pods | kuberay.

``auto`` asks API discovery (``/apis/ray.io/v1``) whether ``rayclusters`` is
served. A definite answer is cached per process; a failed discovery request is
not cached, so the next spawn asks again.

Token auth through KubeRay needs ``spec.authOptions.secretName``, which KubeRay
reads from 1.6.0 on; an older CRD prunes the field and the operator injects a
token of its own, so the Ray nodes and the notebook would disagree. Where the hub
may read the CRD (``get customresourcedefinitions``, a ClusterRole), its schema
says whether the field exists: if not, ``kuberay`` fails with a message naming
the minimum and ``auto`` falls back to plain pods (one log line). Where it may
not, that is logged once and KubeRay is used as it is. With Ray token auth off
there is no ``authOptions`` to wire, so the CRD is not read and any KubeRay is used.
"""

from __future__ import annotations

import logging

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner.clients import shared_client

from ..errors import ClusterStartError, ConfigError
from ..registry import hub_process
from .kube import with_retries

# per API host (in hub_process): whether KubeRay is served, and why its token auth cannot be
# wired ("" when it can, or cannot be told)

KUBERAY_MIN_VERSION = "1.6.0"
CRD_NAME = "rayclusters.ray.io"

KUBERAY_MISSING = (
    "KubeRay is not installed: the Kubernetes API server does not serve rayclusters.ray.io/v1, "
    "but c.RaySpawner.ray_backend is 'kuberay'. Install the KubeRay operator "
    "(helm install kuberay-operator kuberay/kuberay-operator) or set ray_backend to 'pods' or 'auto'."
)


async def kuberay_served(log: logging.Logger | None = None) -> bool:
    api = shared_client("CustomObjectsApi")
    host = api.api_client.configuration.host
    if host in hub_process.kuberay_served:
        return hub_process.kuberay_served[host]

    async def discover() -> bool:
        try:
            resources = await api.get_api_resources("ray.io", "v1")
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return any(r.name == "rayclusters" for r in resources.resources or [])

    try:
        served = await with_retries(discover, what="discover the KubeRay API (ray.io/v1)", timeout=15)
    except ApiException as e:
        raise ClusterStartError(
            f"Could not ask the Kubernetes API which Ray backend to use: HTTP {e.status}", reason="discovery"
        ) from None
    hub_process.kuberay_served[host] = served
    if log:
        log.info("KubeRay %s on %s", "detected" if served else "not installed", host)
    return served


def crd_version(crd: dict) -> str:
    """The KubeRay version a CRD says it is from, or "" (labels/annotations Helm and kustomize set)."""
    meta = crd.get("metadata") or {}
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        for key in ("app.kubernetes.io/version", "helm.sh/chart"):
            if source.get(key):
                return str(source[key])
    return ""


def token_auth_problem(crd: dict) -> str:
    """Why the RayCluster CRD cannot carry ``authOptions.secretName`` (``""``: it can)."""
    for version in (crd.get("spec") or {}).get("versions") or []:
        if version.get("name") != "v1":
            continue
        props = ((version.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}
        auth = ((props.get("spec") or {}).get("properties") or {}).get("authOptions") or {}
        if "secretName" in (auth.get("properties") or {}):
            return ""
        found = crd_version(crd)
        return (
            f"The KubeRay operator installed{' (' + found + ')' if found else ''} is older than "
            f"{KUBERAY_MIN_VERSION}: its RayCluster CRD has no spec.authOptions.secretName, so it would "
            "replace the cluster's token with its own and the notebook could not connect. Upgrade KubeRay "
            f"to {KUBERAY_MIN_VERSION} or later, or set c.RaySpawner.ray_backend = 'pods'."
        )
    return "The RayCluster CRD serves no ray.io/v1 version; upgrade KubeRay."


async def _check_crd(host: str, log: logging.Logger | None) -> str:
    """Read the RayCluster CRD once per API host; "" when fine or unreadable (logged)."""
    if host in hub_process.kuberay_auth_problem:
        return hub_process.kuberay_auth_problem[host]
    api = shared_client("ApiextensionsV1Api")
    try:
        crd = await with_retries(
            lambda: api.read_custom_resource_definition(CRD_NAME), what=f"read the CRD {CRD_NAME}", timeout=15
        )
        crd = api.api_client.sanitize_for_serialization(crd)
        problem = token_auth_problem(crd)
    except (ApiException, ClusterStartError) as e:
        problem = ""
        status = getattr(e, "status", "")
        (log or logging.getLogger(__name__)).warning(
            "Cannot read the CRD %s (%s) to check that KubeRay >= %s can use rayspawner's token Secret; "
            "assuming it can. Grant the hub 'get customresourcedefinitions' (a ClusterRole, see docs/security.md) "
            "to have it checked.",
            CRD_NAME,
            f"HTTP {status}" if status else e,
            KUBERAY_MIN_VERSION,
        )
    hub_process.kuberay_auth_problem[host] = problem
    return problem


async def kuberay_token_auth_problem(log: logging.Logger | None = None) -> str:
    api = shared_client("CustomObjectsApi")
    return await _check_crd(api.api_client.configuration.host, log)


def forget() -> None:
    """Drop cached answers (tests; or after installing KubeRay without restarting the hub)."""
    hub_process.kuberay_served.clear()
    hub_process.kuberay_auth_problem.clear()


async def select_backend(wanted: str, log: logging.Logger | None = None, *, auth_enabled: bool = True) -> str:
    """The backend for ``ray_backend`` = ``wanted``. ``auth_enabled``: the cluster uses Ray
    token auth, which KubeRay can wire only from 1.6.0 on (checked in its CRD); without
    it the KubeRay version does not matter."""
    wanted = (wanted or "auto").lower()
    if wanted == "pods":
        return "pods"
    if wanted == "kuberay":
        if not await kuberay_served(log):
            hub_process.kuberay_served.clear()  # re-check next time: the admin may be installing it now
            raise ClusterStartError(KUBERAY_MISSING, reason="kuberay_missing")
        problem = await kuberay_token_auth_problem(log) if auth_enabled else ""
        if problem:
            hub_process.kuberay_auth_problem.clear()  # re-check next time: the admin may be upgrading it now
            raise ClusterStartError(problem, reason="kuberay_too_old")
        return "kuberay"
    if wanted == "auto":
        if not await kuberay_served(log):
            return "pods"
        problem = await kuberay_token_auth_problem(log) if auth_enabled else ""
        if problem:
            (log or logging.getLogger(__name__)).warning("Using plain pods, not KubeRay: %s", problem)
            return "pods"
        return "kuberay"
    raise ConfigError(f"ray_backend must be 'auto', 'pods' or 'kuberay', not {wanted!r}.")


__all__ = [
    "select_backend",
    "kuberay_served",
    "kuberay_token_auth_problem",
    "token_auth_problem",
    "forget",
    "KUBERAY_MISSING",
    "KUBERAY_MIN_VERSION",
]
