"""k8semu API server + the process kubelet: the server side of the kubelet contract with real processes.

(The process kubelet's own behaviour — Ray, probes, netns details — is tested in
test_k8semu_process_kubelet.py.)
"""

from __future__ import annotations

import base64
import os
import urllib.request
from typing import Any

import pytest

from tests.k8semu import K8sEmu
from tests.k8semu.node import service_hosts

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="the process kubelet needs root")]


def pod_log(emu: K8sEmu, ns: str, name: str) -> str:
    req = urllib.request.Request(
        f"{emu.url}/api/v1/namespaces/{ns}/pods/{name}/log?container=c",
        headers={"Authorization": f"Bearer {emu.admin_token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def test_process_kubelet_through_the_api(k8s_emu_factory: Any) -> None:
    pytest.importorskip("testcluster.node.kubelet_process")
    emu: K8sEmu = k8s_emu_factory(kubelet="process")
    emu.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "px"},
            "data": {"token": base64.b64encode(b"sekrit").decode()},
        }
    )
    emu.create_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "px"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        }
    )
    emu.create_object(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "px", "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "unused",
                        "command": ["sh", "-c", "echo token=$TOKEN pod=$POD; exec sleep 60"],
                        "env": [
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        ],
                    }
                ]
            },
        }
    )

    def ready() -> dict[str, Any] | None:
        st = (emu.get_object("pods", "px", "p") or {}).get("status") or {}
        ok = st.get("phase") == "Running" and all(c.get("ready") for c in st.get("containerStatuses") or [{}])
        return st if ok else None

    st = emu.wait_for(ready, 30)
    assert st["podIP"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["PodScheduled"] == "True"
    reasons = [e["reason"] for e in emu.list_objects("events", "px")]
    assert reasons.count("Scheduled") == 1 and "Started" in reasons  # no duplicate from the scheduler
    emu.wait_for(lambda: "token=sekrit pod=p" in pod_log(emu, "px", "p"), 10)
    hosts = emu.call(lambda store: service_hosts(store, "px"))
    assert hosts["web.px.svc.cluster.local"] == st["podIP"]
    emu.delete_object("pods", "px", "p", grace_period_seconds=5)
    emu.wait_for(lambda: emu.get_object("pods", "px", "p") is None, 20)
