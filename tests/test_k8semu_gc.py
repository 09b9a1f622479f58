"""k8semu deletion semantics: grace periods, finalizers, propagation policies and ownerReferences GC."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from tests.k8semu import K8sEmu


def cm(name: str, owner: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "gc", **meta}
    if owner is not None:
        md["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md}


def gone(emu: K8sEmu, *names: str) -> bool:
    return all(emu.get_object("configmaps", "gc", n) is None for n in names)


def chain(emu: K8sEmu) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    root = emu.create_object(cm("root"))
    mid = emu.create_object(cm("mid", root))
    leaf = emu.create_object(cm("leaf", mid))
    return root, mid, leaf


def test_background_cascade_is_transitive(k8s_emu: K8sEmu) -> None:
    chain(k8s_emu)
    k8s_emu.create_object(cm("bystander"))
    k8s_emu.delete_object("configmaps", "gc", "root")
    k8s_emu.wait_for(lambda: gone(k8s_emu, "root", "mid", "leaf"), 5)
    assert k8s_emu.get_object("configmaps", "gc", "bystander") is not None


def test_foreground_waits_for_dependents(k8s_emu: K8sEmu) -> None:
    root, mid, leaf = chain(k8s_emu)
    # a finalizer on the leaf holds the whole foreground deletion
    k8s_emu.patch_object("configmaps", "gc", "leaf", {"metadata": {"finalizers": ["test/hold"]}})
    k8s_emu.delete_object("configmaps", "gc", "root", propagation_policy="Foreground")
    r = k8s_emu.wait_for(
        lambda: (o := k8s_emu.get_object("configmaps", "gc", "root")) and o["metadata"].get("deletionTimestamp") and o,
        5,
    )
    assert "foregroundDeletion" in r["metadata"]["finalizers"]
    k8s_emu.wait_for(
        lambda: (k8s_emu.get_object("configmaps", "gc", "leaf") or {}).get("metadata", {}).get("deletionTimestamp"), 5
    )
    assert k8s_emu.get_object("configmaps", "gc", "root") is not None
    assert k8s_emu.get_object("configmaps", "gc", "mid") is not None
    k8s_emu.patch_object("configmaps", "gc", "leaf", {"metadata": {"finalizers": None}})
    k8s_emu.wait_for(lambda: gone(k8s_emu, "root", "mid", "leaf"), 5)


def test_orphan_keeps_dependents_and_drops_refs(k8s_emu: K8sEmu) -> None:
    chain(k8s_emu)
    k8s_emu.delete_object("configmaps", "gc", "root", propagation_policy="Orphan")
    k8s_emu.wait_for(lambda: gone(k8s_emu, "root"), 5)
    mid = k8s_emu.get_object("configmaps", "gc", "mid")
    assert mid is not None and not mid["metadata"].get("ownerReferences")
    assert k8s_emu.get_object("configmaps", "gc", "leaf") is not None


def test_finalizers_block_deletion(k8s_emu: K8sEmu) -> None:
    k8s_emu.create_object(cm("fin", finalizers=["example.com/keep"]))
    k8s_emu.delete_object("configmaps", "gc", "fin")
    obj = k8s_emu.get_object("configmaps", "gc", "fin")
    assert obj is not None and obj["metadata"]["deletionTimestamp"]
    k8s_emu.patch_object("configmaps", "gc", "fin", {"metadata": {"finalizers": []}})
    k8s_emu.wait_for(lambda: gone(k8s_emu, "fin"), 5)


def test_dependent_created_after_owner_is_gone_is_collected(k8s_emu: K8sEmu) -> None:
    owner = k8s_emu.create_object(cm("owner"))
    k8s_emu.delete_object("configmaps", "gc", "owner")
    k8s_emu.create_object(cm("late", owner))
    k8s_emu.wait_for(lambda: gone(k8s_emu, "late"), 5)


def test_partial_owner_loss_only_drops_the_reference(k8s_emu: K8sEmu) -> None:
    a = k8s_emu.create_object(cm("a"))
    b = k8s_emu.create_object(cm("b"))
    dep = cm("dep", a)
    dep["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": b["metadata"]["uid"]}
    )
    k8s_emu.create_object(dep)
    k8s_emu.delete_object("configmaps", "gc", "a")
    k8s_emu.wait_for(
        lambda: (
            len((k8s_emu.get_object("configmaps", "gc", "dep") or {}).get("metadata", {}).get("ownerReferences", []))
            == 1
        ),
        5,
    )
    assert k8s_emu.get_object("configmaps", "gc", "dep")["metadata"]["ownerReferences"][0]["name"] == "b"


async def test_pod_graceful_delete_and_gc_of_pods(k8s_emu_client: Any, k8s_emu: K8sEmu) -> None:
    v1 = client.CoreV1Api(k8s_emu_client)
    owner = await v1.create_namespaced_secret("gc", {"metadata": {"name": "owner"}})
    await v1.create_namespaced_pod(
        "gc",
        {
            "metadata": {
                "name": "p",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Secret", "name": "owner", "uid": owner.metadata.uid}],
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        },
    )
    k8s_emu.wait_for(lambda: (k8s_emu.get_object("pods", "gc", "p") or {}).get("status", {}).get("phase") == "Running")
    res = await v1.delete_namespaced_pod("p", "gc", grace_period_seconds=5)
    assert res.metadata.deletion_timestamp is not None and res.metadata.deletion_grace_period_seconds == 5
    k8s_emu.wait_for(lambda: k8s_emu.get_object("pods", "gc", "p") is None, 5)
    # GC through a Secret owner, with a force delete (grace 0)
    await v1.create_namespaced_pod(
        "gc",
        {
            "metadata": {
                "name": "q",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Secret", "name": "owner", "uid": owner.metadata.uid}],
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        },
    )
    await v1.delete_namespaced_secret("owner", "gc", propagation_policy="Background")
    k8s_emu.wait_for(lambda: k8s_emu.get_object("pods", "gc", "q") is None, 5)
    reasons = [e["reason"] for e in k8s_emu.list_objects("events", "gc")]
    assert "Killing" in reasons


def test_namespace_deletion_removes_contents(k8s_emu: K8sEmu) -> None:
    k8s_emu.create_object(cm("x"))
    k8s_emu.delete_object("namespaces", None, "gc")
    k8s_emu.wait_for(lambda: k8s_emu.get_object("namespaces", None, "gc") is None, 5)
    assert k8s_emu.list_objects("configmaps", "gc") == []
