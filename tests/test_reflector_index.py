"""rayspawner.reflector_index: same answers as scanning the reflector's dict."""

from __future__ import annotations

import random
from types import SimpleNamespace

from rayspawner import reflector_index
from rayspawner.reflector_index import ReflectorIndex, pod_events


def _event(i: int, pod: str, second: int) -> dict:
    return {
        "metadata": {"name": f"{pod}.{i:08x}", "namespace": "jhub", "uid": f"uid-{i}", "resourceVersion": str(i)},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "jhub"},
        "lastTimestamp": f"2026-11-25T10:00:{second:02d}Z",
        "eventTime": None,
        "reason": f"r{i}",
    }


def _kubespawner_events(resources: dict, pod: str, last_uid: str | None) -> list[dict]:
    """kubespawner 7's EventReflector.events + KubeSpawner.events, verbatim logic."""
    ordered = sorted(resources.values(), key=lambda e: e["lastTimestamp"] or e["eventTime"])
    out: list[dict] = []
    for e in ordered:
        if e["involvedObject"]["name"] != pod:
            continue
        if last_uid and e["metadata"]["uid"] == last_uid:
            out = []
        else:
            out.append(e)
    return out


def test_pod_events_match_kubespawner_while_the_dict_changes(monkeypatch):
    monkeypatch.setattr(reflector_index, "_EVENTS", ReflectorIndex(reflector_index.event_pod_name, refresh=0))
    rng = random.Random(7)
    resources: dict[str, dict] = {}
    refl = SimpleNamespace(resources=resources)
    pods = [f"jupyter-u{i}" for i in range(5)]
    for i in range(400):
        pod = rng.choice(pods)
        e = _event(i, pod, i // 7)  # several events per second: ties keep arrival order
        resources[f"jhub/{e['metadata']['name']}"] = e
        if i % 13 == 0 and resources:
            resources.pop(rng.choice(list(resources)))
        if i % 50 == 0:  # a relist swaps in a new dict
            resources = dict(resources)
            refl.resources = resources
        marker = rng.choice([None, f"uid-{max(0, i - 5)}"])
        for p in pods:
            assert pod_events(refl, "jhub", p, marker) == _kubespawner_events(resources, p, marker)


def test_index_groups_and_forgets():
    idx = ReflectorIndex(lambda o: o["metadata"]["labels"].get("ray.io/cluster"), refresh=0)
    d = {f"jhub/p{i}": {"metadata": {"name": f"p{i}", "labels": {"ray.io/cluster": f"c{i % 3}"}}} for i in range(9)}
    assert sorted(o["metadata"]["name"] for o in idx.get(d, "c1")) == ["p1", "p4", "p7"]
    del d["jhub/p4"]
    d["jhub/p9"] = {"metadata": {"name": "p9", "labels": {"ray.io/cluster": "c1"}}}
    d["jhub/x"] = {"metadata": {"name": "x", "labels": {}}}
    assert sorted(o["metadata"]["name"] for o in idx.get(d, "c1")) == ["p1", "p7", "p9"]
    assert idx.get(d, "nope") == []
