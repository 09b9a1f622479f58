"""``apiextensions.k8s.io/v1`` ``customresourcedefinitions``, served read-only.

A test hands ``K8sEmu(crds=[...])`` the CRD documents it wants the API server to show
(for instance KubeRay's real RayCluster CRD, or an older variant of it); they are stored
like any cluster-scoped object (uid, resourceVersion, creationTimestamp) and answer GET by
name and list, with label/field selectors, authorized by RBAC like every other resource
(a ClusterRole on ``customresourcedefinitions`` in group ``apiextensions.k8s.io``).

What is not emulated: a served CRD defines no resource (``ray.io/v1 rayclusters`` is the
built-in RayCluster type, there with ``kuberay=True`` whatever the documents say),
and every write or watch is refused with 405: a CRD changing under a test would be a
resource type changing, which the emulator does not model.
"""

from __future__ import annotations

import copy
from typing import Any

from . import errors
from .resources import ResourceType

CRD_TYPE = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
    short_names=("crd", "crds"),
    categories=("api-extensions",),
    builtin=False,
)
READ_VERBS = ("get", "list")


def check_document(doc: Any) -> dict[str, Any]:
    """A copy of one CRD document, refused with a clear message if it is not one."""
    if not isinstance(doc, dict):
        raise ValueError(f"a CRD document must be a mapping, not {type(doc).__name__}")
    if doc.get("apiVersion") != CRD_TYPE.api_version or doc.get("kind") != CRD_TYPE.kind:
        raise ValueError(
            f"not an {CRD_TYPE.api_version} {CRD_TYPE.kind}: apiVersion={doc.get('apiVersion')!r}, "
            f"kind={doc.get('kind')!r}"
        )
    name = (doc.get("metadata") or {}).get("name")
    spec = doc.get("spec") or {}
    group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
    if not name or name != f"{plural}.{group}":
        raise ValueError(f"a CRD's name must be <plural>.<group> ({plural}.{group}), not {name!r}")
    return copy.deepcopy(doc)


def refuse_writes(rtype: ResourceType, verb: str) -> None:
    """405 for anything but get and list on CRDs (after RBAC, as the real server orders them)."""
    if rtype is CRD_TYPE and verb not in READ_VERBS:
        e = errors.method_not_allowed()
        e.message = f"k8semu serves {CRD_TYPE.plural} read-only (get, list); {verb} is not supported"
        raise e
