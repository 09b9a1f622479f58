"""k8semu simulated cluster: sim kubelet behaviour, Services, Deployment/ReplicaSet and KubeRay controllers."""

from __future__ import annotations

import base64
import time
from typing import Any

from tests.k8semu import K8sEmu


def pod(name: str, annotations: dict[str, str] | None = None, restart: str = "Always", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "sim", "annotations": annotations or {}},
        "spec": {"restartPolicy": restart, "containers": [{"name": "main", "image": "img:1"}], **spec},
    }


def status(emu: K8sEmu, name: str) -> dict[str, Any]:
    return (emu.get_object("pods", "sim", name) or {}).get("status") or {}


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def reasons(emu: K8sEmu, name: str) -> list[str]:
    evs = [e for e in emu.list_objects("events", "sim") if e["involvedObject"]["name"] == name]
    return [e["reason"] for e in sorted(evs, key=lambda e: int(e["metadata"]["resourceVersion"]))]


def test_pod_lifecycle_status_and_events(k8s_emu: K8sEmu) -> None:
    k8s_emu.create_object(pod("p", initContainers=[{"name": "init", "image": "img:1"}]))
    st = k8s_emu.wait_for(
        lambda: (s := status(k8s_emu, "p")).get("phase") == "Running" and cond(s, "Ready").get("status") == "True" and s
    )
    assert st["podIP"].startswith("127.244.") and st["hostIP"]
    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert cond(st, t)["status"] == "True", t
    cs = st["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and "running" in cs["state"] and cs["restartCount"] == 0
    assert cs["image"] == "img:1"
    assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    r = reasons(k8s_emu, "p")
    assert r[0] == "Scheduled" and {"Pulling", "Pulled", "Created", "Started"} <= set(r)
    assert r.index("Pulling") < r.index("Pulled") < r.index("Started")


def test_sim_delays_are_configurable(k8s_emu_factory: Any) -> None:
    emu = k8s_emu_factory(sim_delays={"schedule": 0.2, "pull": 0.2, "start": 0.2})
    t0 = time.monotonic()
    emu.create_object(pod("slow"))
    emu.wait_for(lambda: status(emu, "slow").get("phase") == "Running", 5)
    assert time.monotonic() - t0 >= 0.55


def test_image_pull_failure(k8s_emu: K8sEmu) -> None:
    k8s_emu.create_object(pod("bad", {"k8semu/image-pull": "fail"}))
    st = k8s_emu.wait_for(
        lambda: (
            (s := status(k8s_emu, "bad")).get("containerStatuses")
            and s["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == "ImagePullBackOff"
            and s
        )
    )
    assert st["phase"] == "Pending"
    evs = [e for e in k8s_emu.list_objects("events", "sim") if e["involvedObject"]["name"] == "bad"]
    assert any(e["type"] == "Warning" and e["reason"] == "Failed" and "ErrImagePull" in e["message"] for e in evs)


def test_unschedulable(k8s_emu: K8sEmu) -> None:
    k8s_emu.create_object(pod("nope", {"k8semu/unschedulable": "true"}))
    st = k8s_emu.wait_for(
        lambda: (
            cond(status(k8s_emu, "nope"), "PodScheduled").get("reason") == "Unschedulable" and status(k8s_emu, "nope")
        )
    )
    assert cond(st, "PodScheduled")["status"] == "False" and st["phase"] == "Pending"
    assert "FailedScheduling" in reasons(k8s_emu, "nope")
    time.sleep(0.2)
    assert status(k8s_emu, "nope")["phase"] == "Pending"
    assert not (k8s_emu.get_object("pods", "sim", "nope")["spec"].get("nodeName"))


def test_exit_never_and_always(k8s_emu: K8sEmu) -> None:
    k8s_emu.create_object(pod("done", {"k8semu/exit-after": "0.05", "k8semu/exit-code": "3"}, restart="Never"))
    k8s_emu.create_object(pod("ok", {"k8semu/exit-after": "0.05"}, restart="Never"))
    k8s_emu.create_object(pod("loop", {"k8semu/exit-after": "0.05", "k8semu/exit-code": "1"}))
    st = k8s_emu.wait_for(lambda: (s := status(k8s_emu, "done")).get("phase") == "Failed" and s)
    term = st["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    k8s_emu.wait_for(lambda: status(k8s_emu, "ok").get("phase") == "Succeeded")
    st = k8s_emu.wait_for(
        lambda: (
            (s := status(k8s_emu, "loop")).get("containerStatuses")
            and s["containerStatuses"][0]["restartCount"] >= 2
            and s
        )
    )
    assert st["phase"] == "Running"
    assert st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1


def test_missing_secret_waits_with_create_container_config_error(k8s_emu: K8sEmu) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}}]
    p = pod("needs")
    p["spec"]["containers"][0]["env"] = env
    k8s_emu.create_object(p)
    st = k8s_emu.wait_for(
        lambda: (
            (s := status(k8s_emu, "needs")).get("containerStatuses")
            and s["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == "CreateContainerConfigError"
            and s
        )
    )
    assert st["containerStatuses"][0]["state"]["waiting"]["message"] == 'secret "tok" not found'
    k8s_emu.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tok", "namespace": "sim"},
            "data": {"token": base64.b64encode(b"x").decode()},
        }
    )
    k8s_emu.wait_for(lambda: status(k8s_emu, "needs").get("phase") == "Running", 5)


def test_service_cluster_ip(k8s_emu: K8sEmu) -> None:
    svc = k8s_emu.create_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s", "namespace": "sim"},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
        }
    )
    assert svc["spec"]["clusterIP"].startswith("10.96.") and svc["spec"]["ports"][0]["targetPort"] == 80


def test_deployment_replaces_deleted_pod_and_scales(k8s_emu: K8sEmu) -> None:
    k8s_emu.create_object(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "sim"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        }
    )

    def dstatus() -> dict[str, Any]:
        return (k8s_emu.get_object("deployments", "sim", "web") or {}).get("status") or {}

    k8s_emu.wait_for(lambda: dstatus().get("readyReplicas") == 2 and dstatus().get("availableReplicas") == 2)
    rs = k8s_emu.list_objects("replicasets", "sim")
    assert len(rs) == 1 and rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    rs_name = rs[0]["metadata"]["name"]
    pods = k8s_emu.list_objects("pods", "sim", label_selector="app=web")
    assert all(
        p["metadata"]["name"].startswith(rs_name + "-") and len(p["metadata"]["name"]) == len(rs_name) + 6 for p in pods
    )
    assert all(p["metadata"]["ownerReferences"][0]["name"] == rs_name for p in pods)
    victim = pods[0]["metadata"]["name"]
    k8s_emu.delete_object("pods", "sim", victim)
    k8s_emu.wait_for(
        lambda: (
            {
                p["metadata"]["name"]
                for p in k8s_emu.list_objects("pods", "sim", label_selector="app=web")
                if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            }
            - {victim}
            and len(
                [
                    p
                    for p in k8s_emu.list_objects("pods", "sim", label_selector="app=web")
                    if p["metadata"]["name"] != victim
                ]
            )
            == 2
        )
    )
    k8s_emu.patch_object("deployments", "sim", "web", {"spec": {"replicas": 3}})
    k8s_emu.wait_for(lambda: dstatus().get("readyReplicas") == 3 and dstatus().get("replicas") == 3)
    k8s_emu.patch_object("deployments", "sim", "web", {"spec": {"replicas": 1}})
    k8s_emu.wait_for(lambda: len(k8s_emu.list_objects("pods", "sim", label_selector="app=web")) == 1)
    k8s_emu.delete_object("deployments", "sim", "web")
    k8s_emu.wait_for(lambda: not k8s_emu.list_objects("pods", "sim") and not k8s_emu.list_objects("replicasets", "sim"))


RC = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "ray-alice", "namespace": "jhub", "labels": {"app.kubernetes.io/managed-by": "rayspawner"}},
    "spec": {
        "rayVersion": "2.60.0",
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0"},
            "template": {
                "metadata": {"labels": {"hub.jupyter.org/username": "alice"}},
                "spec": {
                    "containers": [
                        {
                            "name": "ray-head",
                            "image": "rayproject/ray:2.60.0",
                            "ports": [
                                {"name": "gcs-server", "containerPort": 6379},
                                {"name": "client", "containerPort": 10001},
                            ],
                        }
                    ]
                },
            },
        },
        "workerGroupSpecs": [
            {
                "groupName": "cpu",
                "replicas": 2,
                "minReplicas": 0,
                "maxReplicas": 4,
                "rayStartParams": {},
                "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0"}]}},
            }
        ],
    },
}


def test_kuberay_sim(k8s_emu_kuberay: K8sEmu) -> None:
    emu = k8s_emu_kuberay
    emu.create_object(RC)

    def rc_status() -> dict[str, Any]:
        return (emu.get_object("rayclusters", "jhub", "ray-alice") or {}).get("status") or {}

    st = emu.wait_for(lambda: rc_status().get("state") == "ready" and rc_status())
    pods = emu.list_objects("pods", "jhub", label_selector="ray.io/cluster=ray-alice")
    heads = [p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "head"]
    workers = [p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker"]
    assert len(heads) == 1 and len(workers) == 2
    head = heads[0]
    assert head["metadata"]["name"].startswith("ray-alice-head-") and len(head["metadata"]["name"]) == 20
    assert head["metadata"]["labels"]["ray.io/group"] == "headgroup"
    assert head["metadata"]["labels"]["hub.jupyter.org/username"] == "alice"
    assert all(w["metadata"]["labels"]["ray.io/group"] == "cpu" for w in workers)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "RayCluster" for p in pods)
    svc = emu.get_object("services", "jhub", "ray-alice-head-svc")
    assert svc["spec"]["selector"] == {"ray.io/cluster": "ray-alice", "ray.io/node-type": "head"}
    assert {p["port"] for p in svc["spec"]["ports"]} == {6379, 10001}
    assert st["head"]["serviceName"] == "ray-alice-head-svc"
    assert st["head"]["podIP"] == emu.get_object("pods", "jhub", head["metadata"]["name"])["status"]["podIP"]
    assert st["readyWorkerReplicas"] == 2 and st["desiredWorkerReplicas"] == 2
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["HeadPodReady"]["status"] == "True" and conds["RayClusterProvisioned"]["status"] == "True"
    assert all(c["reason"] and c["lastTransitionTime"] for c in conds.values())
    rc = emu.get_object("rayclusters", "jhub", "ray-alice")
    assert rc["spec"]["authOptions"] == {"mode": "token"}
    rc_events = {e["reason"] for e in emu.list_objects("events", "jhub") if e["involvedObject"]["kind"] == "RayCluster"}
    assert {"CreatedHeadPod", "CreatedWorkerPod", "CreatedService"} <= rc_events
    env = {e["name"]: e.get("value") for e in workers[0]["spec"]["containers"][0]["env"]}
    assert env["FQ_RAY_IP"] == "ray-alice-head-svc.jhub.svc.cluster.local"

    # a deleted worker is recreated; scaling follows spec
    emu.delete_object("pods", "jhub", workers[0]["metadata"]["name"], grace_period_seconds=0)
    emu.wait_for(
        lambda: (
            len(
                [
                    p
                    for p in emu.list_objects("pods", "jhub", label_selector="ray.io/node-type=worker")
                    if p["metadata"]["name"] != workers[0]["metadata"]["name"]
                ]
            )
            == 2
        )
    )
    emu.patch_object(
        "rayclusters",
        "jhub",
        "ray-alice",
        [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1}],
        patch_type="json",
    )
    emu.wait_for(
        lambda: (
            rc_status().get("desiredWorkerReplicas") == 1
            and len(emu.list_objects("pods", "jhub", label_selector="ray.io/node-type=worker")) == 1
        )
    )

    # deleting the RayCluster garbage-collects pods and the Service
    emu.delete_object("rayclusters", "jhub", "ray-alice")
    emu.wait_for(lambda: not emu.list_objects("pods", "jhub") and not emu.list_objects("services", "jhub"))


def test_kuberay_not_ready_while_head_unready(k8s_emu_kuberay: K8sEmu) -> None:
    emu = k8s_emu_kuberay
    rc = {
        **RC,
        "spec": {
            **RC["spec"],
            "headGroupSpec": {
                **RC["spec"]["headGroupSpec"],
                "template": {
                    "metadata": {"annotations": {"k8semu/not-ready": "true"}},
                    "spec": RC["spec"]["headGroupSpec"]["template"]["spec"],
                },
            },
        },
    }
    emu.create_object(rc)
    st = emu.wait_for(
        lambda: (
            (s := (emu.get_object("rayclusters", "jhub", "ray-alice") or {}).get("status") or {}).get(
                "readyWorkerReplicas"
            )
            == 2
            and s
        )
    )
    time.sleep(0.1)
    st = emu.get_object("rayclusters", "jhub", "ray-alice")["status"]
    assert st.get("state") != "ready"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["HeadPodReady"]["status"] == "False"
    assert conds["RayClusterProvisioned"]["status"] == "False"
