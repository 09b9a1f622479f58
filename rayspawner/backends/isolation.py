"""Which NetworkPolicy types already isolate the notebook pod.

The notebook-side policy (:func:`rayspawner.manifests.notebook.network_policy`) may only
*open* the notebook pod for its Ray traffic. A policy type it names isolates the pod for
that direction, so naming one that no other policy names would cut a notebook off from
everything else (the proxy, the internet). Policies are additive, so it names exactly the
types some other policy in the namespace already applies to the notebook pod: with
Zero-to-JupyterHub's singleuser policy both, with none nothing (there is nothing to open).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .. import naming
from .kube import KubeClient

log = logging.getLogger(__name__)

POLICY_TYPES = ("Ingress", "Egress")


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against pod labels."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an operator we do not know: do not claim the pod is isolated
    return True


def policy_types(policy: Mapping[str, Any]) -> tuple[str, ...]:
    """The types a policy applies: ``policyTypes``, or Kubernetes' default when unset
    (Ingress, plus Egress if it has egress rules)."""
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return tuple(t for t in POLICY_TYPES if t in types)
    return ("Ingress", "Egress") if spec.get("egress") else ("Ingress",)


def isolating_types(policies: Iterable[Mapping[str, Any]], pod_labels: Mapping[str, str]) -> tuple[str, ...]:
    """The policy types under which policies other than rayspawner's isolate a pod with these labels."""
    found: set[str] = set()
    for policy in policies:
        labels = (policy.get("metadata") or {}).get("labels") or {}
        if labels.get(naming.LABEL_MANAGED_BY) == naming.MANAGED_BY:
            continue
        if selects((policy.get("spec") or {}).get("podSelector"), pod_labels):
            found.update(policy_types(policy))
    return tuple(t for t in POLICY_TYPES if t in found)


async def notebook_isolation(kube: KubeClient, namespace: str, pod_labels: Mapping[str, str]) -> tuple[str, ...]:
    """One list of the namespace's NetworkPolicies (needs ``list`` on networkpolicies)."""
    types = isolating_types(await kube.list("NetworkPolicy", namespace, ""), pod_labels)
    log.debug("Notebook pods labelled %s in %s are isolated for %s", dict(pod_labels), namespace, types or "nothing")
    return types
