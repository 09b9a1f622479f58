"""A small NetworkPolicy (networking.k8s.io/v1) evaluator over plain pod/policy/namespace dicts.

``Network(pods, policies, namespaces).allowed(src, dst, port, protocol="TCP")`` answers
"may ``src`` open a connection to ``dst`` on ``port``?" as a conforming CNI would:

- a pod selected by no policy of a type (Ingress/Egress) is unrestricted in that direction;
  selected by at least one, it is default-deny and the union of their rules applies;
- a connection needs the source's egress AND the destination's ingress to allow it (replies of
  an allowed connection are implied, as NetworkPolicy is connection-based);
- ``policyTypes``: as given; if absent, ``Ingress`` plus ``Egress`` when the policy has egress rules;
- ``podSelector`` / ``namespaceSelector``: ``matchLabels`` and ``matchExpressions``
  (In, NotIn, Exists, DoesNotExist); ``{}`` selects everything; a peer with only a
  ``podSelector`` means pods in the policy's namespace; with only a ``namespaceSelector``,
  all pods of the selected namespaces; with both, both. Namespaces carry the automatic
  ``kubernetes.io/metadata.name`` label;
- a rule without ``from``/``to`` matches every peer; without ``ports``, every port;
- ports: number or name (a name is looked up in the *destination* pod's containerPorts,
  protocol included), ``protocol`` (default TCP), ``endPort`` ranges;
- ``ipBlock`` (``cidr`` minus ``except``) is matched against the peer pod's ``status.podIP``;
  real CNIs are allowed to differ for pod-to-pod traffic (the API says ipBlock is meant for
  cluster-external IPs), so a result that depends on an ipBlock is reported by :meth:`explain`;
- pods with ``hostNetwork: true`` are not isolated by policies (as on real clusters).

Not modelled: Services (policies act on pod IPs/ports after DNAT: use the pod's target port),
SCTP specifics, AdminNetworkPolicy/BaselineAdminNetworkPolicy, CNI-specific extensions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions); ``{}`` matches everything."""
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op!r}")
    return True


def policy_types(policy: Obj) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _ns(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("namespace") or "default"


def _name(obj: Obj) -> str:
    return f"{_ns(obj)}/{obj['metadata']['name']}"


def resolve_port(pod: Obj, port: int | str, protocol: str) -> int | None:
    """A named port of ``pod`` (any container, the protocol must match) as a number."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            if p.get("name") == port and p.get("protocol", "TCP") == protocol:
                return int(p["containerPort"])
    return None


@dataclass
class Verdict:
    allowed: bool
    egress: str
    ingress: str
    uses_ip_block: bool = False

    def __bool__(self) -> bool:
        return self.allowed


class Network:
    """Pods, NetworkPolicies and Namespaces (as the API server returns them)."""

    def __init__(self, pods: Iterable[Obj], policies: Iterable[Obj], namespaces: Iterable[Obj] = ()):
        self.pods = list(pods)
        self.policies = list(policies)
        self.ns_labels: dict[str, dict[str, str]] = {}
        for ns in namespaces:
            name = ns["metadata"]["name"]
            self.ns_labels[name] = {**_labels(ns), "kubernetes.io/metadata.name": name}

    @classmethod
    def from_cluster(cls, api: Any, namespaces: Iterable[str], extra_policies: Iterable[Obj] = ()) -> Network:
        """The pods and policies of ``namespaces`` as an API server holds them (``api``: the test
        cluster's admin client), every namespace's labels, plus policies not stored there. A policy
        acts on the pods of its own namespace only, so the other namespaces' change no answer here.

        The sim node gives pods loopback addresses (127.244.a.b) so that nothing a test does
        leaves the machine; for ipBlock rules they stand for a real cluster's pod network,
        10.244.a.b (a private range, as z2jh's privateIPs rules expect).
        """
        pods: list[Obj] = []
        policies: list[Obj] = []
        for ns in namespaces:
            for pod in api.list_objects("pods", ns):
                ip = (pod.get("status") or {}).get("podIP") or ""
                if ip.startswith("127.244."):
                    pod = {**pod, "status": {**pod["status"], "podIP": "10.244." + ip[len("127.244.") :]}}
                pods.append(pod)
            policies += api.list_objects("networkpolicies", ns)
        return cls(pods, [*policies, *extra_policies], api.list_objects("namespaces"))

    def pod(self, namespace: str, name: str) -> Obj:
        for p in self.pods:
            if _ns(p) == namespace and p["metadata"]["name"] == name:
                return p
        raise KeyError(f"no pod {namespace}/{name}")

    def select(self, labels: Mapping[str, str], namespace: str | None = None) -> list[Obj]:
        """Pods carrying all of ``labels`` (in ``namespace``, if given)."""
        return [
            p
            for p in self.pods
            if (namespace is None or _ns(p) == namespace) and all(_labels(p).get(k) == v for k, v in labels.items())
        ]

    def _namespace_labels(self, name: str) -> dict[str, str]:
        return self.ns_labels.get(name, {"kubernetes.io/metadata.name": name})

    def selecting(self, pod: Obj, kind: str) -> list[Obj]:
        """The policies of ``kind`` (Ingress/Egress) that isolate ``pod``."""
        if (pod.get("spec") or {}).get("hostNetwork"):
            return []
        return [
            pol
            for pol in self.policies
            if _ns(pol) == _ns(pod)
            and kind in policy_types(pol)
            and selector_matches((pol.get("spec") or {}).get("podSelector") or {}, _labels(pod))
        ]

    def _peer_matches(self, peer: Obj, policy_ns: str, pod: Obj) -> tuple[bool, bool]:
        """(matches, decided by an ipBlock)."""
        if "ipBlock" in peer:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                return False, True
            addr = ipaddress.ip_address(ip)
            block = peer["ipBlock"]
            inside = addr in ipaddress.ip_network(block["cidr"], strict=False) and not any(
                addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or []
            )
            return inside, True
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        if pod_sel is None and ns_sel is None:
            raise ValueError(f"a NetworkPolicy peer needs podSelector, namespaceSelector or ipBlock: {peer}")
        if ns_sel is None:
            ns_ok = _ns(pod) == policy_ns
        else:
            ns_ok = selector_matches(ns_sel, self._namespace_labels(_ns(pod)))
        return ns_ok and selector_matches(pod_sel or {}, _labels(pod)), False

    @staticmethod
    def _ports_match(ports: list[Obj] | None, dst: Obj, port: int, protocol: str) -> bool:
        if not ports:
            return True
        for p in ports:
            proto = p.get("protocol", "TCP")
            if proto != protocol:
                continue
            if "port" not in p:
                return True  # all ports of this protocol
            number = resolve_port(dst, p["port"], proto)
            if number is None:
                continue
            end = p.get("endPort")
            if number == port or (end is not None and number <= port <= int(end)):
                return True
        return False

    def _direction(
        self, kind: str, subject: Obj, other: Obj, dst: Obj, port: int, protocol: str
    ) -> tuple[bool, str, bool]:
        """May ``subject`` (isolated by its ``kind`` policies) talk to/hear from ``other``?"""
        policies = self.selecting(subject, kind)
        if not policies:
            return True, f"{kind.lower()}: {_name(subject)} is not isolated", False
        key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        ip_used = False
        for pol in policies:
            for i, rule in enumerate((pol.get("spec") or {}).get(key) or []):
                if not self._ports_match(rule.get("ports"), dst, port, protocol):
                    continue
                peers = rule.get(peers_key)
                if not peers:
                    return True, f"{kind.lower()}: {_name(pol)} rule {i} (any peer)", False
                for peer in peers:
                    ok, by_ip = self._peer_matches(peer, _ns(pol), other)
                    ip_used |= by_ip
                    if ok:
                        return True, f"{kind.lower()}: {_name(pol)} rule {i}", by_ip
        names = ", ".join(_name(p) for p in policies)
        return False, f"{kind.lower()}: denied (isolated by {names}; no rule matches)", ip_used

    def explain(self, src: Obj, dst: Obj, port: int, protocol: str = "TCP") -> Verdict:
        e_ok, e_why, e_ip = self._direction("Egress", src, dst, dst, port, protocol)
        i_ok, i_why, i_ip = self._direction("Ingress", dst, src, dst, port, protocol)
        return Verdict(e_ok and i_ok, e_why, i_why, e_ip or i_ip)

    def allowed(self, src: Obj, dst: Obj, port: int, protocol: str = "TCP") -> bool:
        return self.explain(src, dst, port, protocol).allowed
