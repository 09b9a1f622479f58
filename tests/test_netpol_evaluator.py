"""The NetworkPolicy evaluator of the security tests (tests/netpol.py) on its own, without a
cluster: default deny, named ports, selectors, namespace selectors, port ranges, ipBlock."""

from __future__ import annotations

from typing import Any

from .netpol import Network, selector_matches

NS = "jhub"


def _pod(name: str, labels: dict[str, str], ns: str = NS, ip: str = "10.244.0.9", ports: list | None = None) -> dict:
    c: dict[str, Any] = {"name": "c", "image": "x", **({"ports": ports} if ports else {})}
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [c]},
        "status": {"podIP": ip},
    }


def _policy(spec: dict[str, Any], ns: str = NS) -> dict:
    return {"metadata": {"name": "p", "namespace": ns}, "spec": spec}


def test_evaluator_semantics():
    web = _pod("web", {"app": "web", "tier": "a"}, ports=[{"name": "http", "containerPort": 8080}])
    cli = _pod("cli", {"app": "cli"}, ip="10.244.0.7")
    far = _pod("far", {"app": "cli"}, ns="other", ip="192.168.1.5")
    ns = [{"metadata": {"name": "other", "labels": {"team": "x"}}}]
    assert Network([web, cli], []).allowed(cli, web, 1)  # nothing selects: open
    # selecting with no rules: default deny (policyTypes defaulted to Ingress only)
    deny = _policy({"podSelector": {"matchLabels": {"app": "web"}}})
    net = Network([web, cli], [deny])
    assert not net.allowed(cli, web, 8080) and net.allowed(web, cli, 8080)
    # named port + matchExpressions + namespaceSelector with podSelector
    rule = _policy(
        {
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "x"}},
                            "podSelector": {"matchLabels": {"app": "cli"}},
                        }
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    )
    net = Network([web, cli, far], [rule], ns)
    assert net.allowed(far, web, 8080) and not net.allowed(far, web, 8081) and not net.allowed(cli, web, 8080)
    assert not net.allowed(far, web, 8080, "UDP")
    # endPort range, ipBlock with except, egress policyTypes
    eg = _policy(
        {
            "podSelector": {"matchLabels": {"app": "cli"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.0.9/32"]}}]},
                {"ports": [{"port": 8000, "endPort": 8100}]},
            ],
        }
    )
    net = Network([web, cli], [eg])
    v = net.explain(cli, web, 8080)
    assert v.allowed and "rule 1" in v.egress
    assert not net.allowed(cli, web, 9000)
    assert net.explain(cli, _pod("x", {}, ip="10.244.3.3"), 9000).uses_ip_block
    assert not selector_matches({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]}, {"k": ""})
    assert selector_matches({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["v"]}]}, {})
