"""RaySpawner with the plain-pods backend against the real test cluster (sim node)."""

from __future__ import annotations

import asyncio
import json

import pytest

from rayspawner import naming
from rayspawner.errors import ClusterStartError, InvalidOptions
from rayspawner.manifests.notebook import NOTEBOOK_NODE_CONTAINER, node_ready
from testcluster.node.kubelet_sim import NOT_READY_CONTAINERS, SIM_DELAYS

from .bad_inputs import BAD_INPUTS, LIMITS
from .bad_inputs import PROFILES as BAD_PROFILES
from .spawner_fixtures import ray_objects
from .spawner_fixtures import RAY, env_of, start, wait_until


async def test_spawn_creates_owned_cluster_and_stop_removes_it(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube)
    url = await start(sp)
    notebook = kube.get_object("pods", kube.ns, sp.pod_name)
    assert url.endswith(":8888")
    uid = notebook["metadata"]["uid"]

    await wait_until(lambda: len(ray_objects(kube, "ray-alice")) >= 8)
    objs = ray_objects(kube, "ray-alice")
    kinds = {k for k, _ in objs}
    assert {
        ("secrets", "ray-alice-ray-token"),
        ("services", "ray-alice-head-svc"),
        ("pods", "ray-alice-head"),
        ("deployments", "ray-alice-workers"),
        ("networkpolicies", "ray-alice-ray"),
    } <= set(objs)
    assert kinds == {"pods", "services", "secrets", "deployments", "replicasets", "networkpolicies"}
    assert sum(1 for k, n in objs if k == "pods" and "workers" in n) == 2

    # direct objects are owned by the notebook pod; worker pods through Deployment → ReplicaSet
    for resource in ("secrets", "services", "deployments", "networkpolicies"):
        for obj in kube.list_objects(resource, kube.ns, label_selector="ray.io/cluster=ray-alice"):
            assert [o["uid"] for o in obj["metadata"]["ownerReferences"]] == [uid], (resource, obj["metadata"])
    head = kube.get_object("pods", kube.ns, "ray-alice-head")
    assert head["metadata"]["ownerReferences"][0]["uid"] == uid
    for pod in kube.list_objects("pods", kube.ns, label_selector="ray.io/cluster=ray-alice"):
        labels = pod["metadata"]["labels"]
        assert "component" not in labels  # never looks like a notebook pod
        assert labels[naming.LABEL_MANAGED_BY] == "rayspawner"
        assert labels[naming.LABEL_USERNAME] == "alice"
        assert labels[naming.LABEL_COMPONENT] in ("ray-head", "ray-worker")

    env = env_of(notebook)
    # driver mode (the default): the kernel is a direct driver on the notebook's own Ray node
    assert env["RAY_ADDRESS"]["value"] == f"ray-alice-head-svc.{kube.ns}.svc.cluster.local:6379"
    assert env["RAY_DASHBOARD_URL"]["value"] == f"http://ray-alice-head-svc.{kube.ns}.svc.cluster.local:8265"
    assert env["RAY_API_SERVER_ADDRESS"]["value"] == env["RAY_DASHBOARD_URL"]["value"]
    assert env["RAY_CLUSTER_NAME"]["value"] == "ray-alice"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ray-alice-ray-token", "key": "auth_token"}
    assert "value" not in env["RAY_AUTH_TOKEN"]

    state = sp.get_state()
    assert state["ray_cluster"] == {"name": "ray-alice", "namespace": kube.ns, "backend": "pods"}
    token = kube.get_object("secrets", kube.ns, "ray-alice-ray-token")["data"]["auth_token"]
    assert token not in json.dumps(state)
    assert await sp.poll() is None

    await asyncio.wait_for(sp.stop(), 20)
    assert ray_objects(kube) == []
    assert kube.get_object("pods", kube.ns, sp.pod_name) is None


async def test_cluster_is_created_while_notebook_starts(kube, ray_spawner_factory):
    """The cluster's objects exist before the notebook pod is running (parallel, not after)."""
    emu = kube
    sp = ray_spawner_factory(emu, extra_annotations={SIM_DELAYS: "pull=1.0"})
    sp.user_options = dict(RAY)
    fut = sp.start()
    await wait_until(lambda: emu.get_object("pods", kube.ns, "ray-alice-head"), timeout=10)
    notebook = emu.get_object("pods", kube.ns, sp.pod_name)
    assert notebook["status"].get("phase") != "Running"
    await asyncio.wait_for(fut, 30)
    await sp.stop()


async def test_gc_removes_cluster_when_notebook_pod_is_deleted(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube)
    await start(sp)
    kube.delete_object("pods", kube.ns, sp.pod_name, grace_period_seconds=0)
    await wait_until(lambda: ray_objects(kube) == [], timeout=15)


async def test_named_servers_and_users_are_independent(kube, ray_spawner_factory):
    a = ray_spawner_factory(kube, "alice")
    a2 = ray_spawner_factory(kube, "alice", server="big")
    b = ray_spawner_factory(kube, "bob")
    await asyncio.gather(start(a), start(a2), start(b))
    names = {n for k, n in ray_objects(kube) if k == "services"}
    assert names == {"ray-alice-head-svc", "ray-alice--big-head-svc", "ray-bob-head-svc"}
    assert env_of(kube.get_object("pods", kube.ns, b.pod_name))["RAY_ADDRESS"]["value"].startswith("ray-bob-head-svc.")
    await a.stop()
    assert ray_objects(kube, "ray-alice") == []
    assert ray_objects(kube, "ray-alice--big") and ray_objects(kube, "ray-bob")
    await asyncio.gather(a2.stop(), b.stop())
    assert ray_objects(kube) == []


async def test_restarted_hub_reattaches_from_state(kube, ray_spawner_factory):
    first = ray_spawner_factory(kube)
    await start(first)
    state = first.get_state()
    second = ray_spawner_factory(kube)  # a new hub process's spawner object
    second.load_state(state)
    assert await second.poll() is None
    await asyncio.wait_for(second.stop(), 20)
    assert ray_objects(kube) == []


async def test_start_replaces_leftovers_from_an_earlier_server(kube, ray_spawner_factory):
    """KubeSpawner calls stop() inside _start on a 409 for the pod; the cluster must survive that path."""
    sp = ray_spawner_factory(kube)
    await start(sp)
    # the hub "forgets" the server (crash before recording stop), then starts it again
    again = ray_spawner_factory(kube)
    await start(again)
    notebook = kube.get_object("pods", kube.ns, again.pod_name)
    secret = kube.get_object("secrets", kube.ns, "ray-alice-ray-token")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == notebook["metadata"]["uid"]
    assert (
        kube.get_object("pods", kube.ns, "ray-alice-head")["metadata"]["ownerReferences"][0]["uid"]
        == notebook["metadata"]["uid"]
    )
    await again.stop()
    assert ray_objects(kube) == []


@pytest.mark.parametrize("case,user_options,fragment", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
async def test_bad_input_creates_nothing(kube, ray_spawner_factory, case, user_options, fragment):
    emu = kube
    emu.reset_request_log()
    sp = ray_spawner_factory(emu, profile_list=BAD_PROFILES, **LIMITS)
    sp.user_options = user_options
    with pytest.raises(InvalidOptions) as err:
        await asyncio.wait_for(sp.start(), 10)
    assert fragment in err.value.message
    writes = [r for r in emu.request_log if r[0] in ("create", "patch", "update", "delete", "deletecollection")]
    assert writes == []
    assert emu.list_objects("pods", kube.ns) == [] and ray_objects(emu) == []


async def test_progress_reports_cluster_until_ready(kube, ray_spawner_factory):
    emu = kube
    slow = {SIM_DELAYS: "pull=0.4,start=0.2"}
    sp = ray_spawner_factory(emu, extra_annotations=slow, ray_extra_annotations=slow)
    sp.user_options = dict(RAY)
    fut = sp.start()
    messages = [e["message"] async for e in sp.progress()]
    await fut
    ray_msgs = [m for m in messages if m.startswith("Ray cluster ray-alice")]
    assert ray_msgs, messages
    assert any("head" in m and "ready" not in m.split("head")[1][:7] for m in ray_msgs[:-1]) or len(ray_msgs) >= 2
    assert "is ready" in ray_msgs[-1]
    ready_at = next(i for i, m in enumerate(messages) if "accepting connections" in m)
    assert all("is ready" not in m for m in messages[:ready_at])
    assert any("head starting" in m for m in messages[:ready_at]), messages  # the step before, in words
    assert any("Pulling" in m or "pulling" in m for m in messages)
    await sp.stop()


async def test_failing_head_fails_spawn_readably_and_cleans_up(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube, ray_extra_annotations={"testcluster.rayspawner.test/image-pull": "fail"})
    sp.user_options = dict(RAY)
    fut = sp.start()
    messages = []

    async def collect():
        async for e in sp.progress():
            messages.append(e["message"])

    collector = asyncio.ensure_future(collect())
    with pytest.raises(ClusterStartError) as err:
        await asyncio.wait_for(fut, 30)
    await asyncio.wait_for(collector, 10)
    assert "cannot be pulled" in err.value.message and "ray-alice" in err.value.message
    assert any("cannot be pulled" in m for m in messages), messages
    await sp.stop()  # what JupyterHub does after a failed start
    assert ray_objects(kube) == []


async def test_poll_recreates_a_deleted_head_then_gives_up(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube, ray_head_restart_limit=1)
    await start(sp)
    kube.delete_object("pods", kube.ns, "ray-alice-head", grace_period_seconds=0)
    await wait_until(lambda: f"{kube.ns}/ray-alice-head" not in sp._ray_pods())
    assert await sp.poll() is None
    await wait_until(lambda: kube.get_object("pods", kube.ns, "ray-alice-head"))
    kube.delete_object("pods", kube.ns, "ray-alice-head", grace_period_seconds=0)
    await wait_until(lambda: f"{kube.ns}/ray-alice-head" not in sp._ray_pods())
    assert await sp.poll() == 1
    await sp.stop()
    assert ray_objects(kube) == []


def test_crash_loop_is_fatal_only_after_repeated_restarts():
    from rayspawner.backends.pods import CRASH_LOOP_RESTARTS, pod_problem

    def pod(restarts):
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 10s"}
        return {
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "ray-head", "restartCount": restarts, "state": {"waiting": waiting}}],
            }
        }

    assert pod_problem(pod(1)) is None
    assert "keeps crashing" in pod_problem(pod(CRASH_LOOP_RESTARTS))


def test_api_errors_become_readable_reasons():
    import json as _json

    from kubernetes_asyncio.client.exceptions import ApiException

    from rayspawner.backends.kube import KINDS, api_error

    def exc(status, message):
        e = ApiException(status=status, reason="x")
        e.body = _json.dumps({"kind": "Status", "message": message, "code": status})
        return e

    quota = api_error(
        exc(
            403,
            'pods "ray-alice-head" is forbidden: exceeded quota: compute, '
            "requested: cpu=1, used: cpu=8, limited: cpu=8",
        ),
        "create",
        KINDS["Pod"],
        "jhub",
        "ray-alice-head",
    )
    assert quota.reason_label == "quota" and "Quota exceeded" in quota.message and "limited: cpu=8" in quota.message
    rbac = api_error(
        exc(403, 'networkpolicies.networking.k8s.io is forbidden: User "system:serviceaccount:jhub:hub" cannot create'),
        "create",
        KINDS["NetworkPolicy"],
        "jhub",
        "ray-alice-ray",
    )
    assert rbac.reason_label == "forbidden"
    assert 'apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: ["create"]' in rbac.message
    other = api_error(exc(422, "spec.containers[0].image: Required value"), "create", KINDS["Pod"], "jhub", "x")
    assert "422" in other.message and "Required value" in other.message


async def test_start_without_waiting_for_the_head(kube, ray_spawner_factory):
    """ray_wait_for_head=False: start returns with the notebook even while the head is not ready."""
    never_ready = {"testcluster.rayspawner.test/not-ready": "true"}
    sp = ray_spawner_factory(kube, ray_wait_for_head=False, ray_extra_annotations=never_ready)
    await start(sp)
    assert not (await sp.ray_session.backend.status(sp.ray_session.spec)).head_ready
    await sp.stop()
    waiting = ray_spawner_factory(kube, ray_wait_for_head=True, ray_extra_annotations=never_ready, start_timeout=5)
    with pytest.raises(ClusterStartError, match="not ready within"):
        await start(waiting)
    await waiting.stop()
    assert ray_objects(kube) == []


async def test_driver_mode_adds_the_notebook_node_and_client_mode_does_not(kube, ray_spawner_factory):
    # Ray's start-up windows, widened for a loaded node: every Ray node needs them, the notebook's too
    slow_node = {"RAY_raylet_start_wait_time_s": "180"}
    driver = ray_spawner_factory(kube, "alice", ray_extra_env=slow_node)
    client = ray_spawner_factory(kube, "bob", ray_connect_mode="client")
    await asyncio.gather(start(driver), start(client))
    pod = kube.get_object("pods", kube.ns, driver.pod_name)
    node = next(c for c in pod["spec"]["initContainers"] if c["name"] == NOTEBOOK_NODE_CONTAINER)
    head = kube.get_object("pods", kube.ns, "ray-alice-head")
    for container in (node, head["spec"]["containers"][0]):
        assert {"name": "RAY_raylet_start_wait_time_s", "value": "180"} in container["env"], container["name"]
    assert node["restartPolicy"] == "Always" and pod["spec"]["shareProcessNamespace"] is True
    assert node["image"] == pod["spec"]["containers"][0]["image"]
    assert f"--address=ray-alice-head-svc.{kube.ns}.svc.cluster.local:6379" in node["command"][2]
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert {"/tmp/ray", "/dev/shm"} <= mounts and {m["mountPath"] for m in node["volumeMounts"]} == {
        "/tmp/ray",
        "/dev/shm",
    }
    assert node_ready(pod)  # the spawn waited for it (ray_wait_for_head)

    pod = kube.get_object("pods", kube.ns, client.pod_name)
    assert not any(c["name"] == NOTEBOOK_NODE_CONTAINER for c in pod["spec"].get("initContainers") or [])
    assert not pod["spec"].get("shareProcessNamespace")
    assert env_of(pod)["RAY_ADDRESS"]["value"] == f"ray://ray-bob-head-svc.{kube.ns}.svc.cluster.local:10001"
    await asyncio.gather(driver.stop(), client.stop())
    assert ray_objects(kube) == []


async def test_a_notebook_that_cannot_join_fails_the_spawn_readably(kube, ray_spawner_factory):
    """Driver mode: the head is ready but the notebook's Ray node never is (a NetworkPolicy in the
    way, say): the spawn fails with a message saying so, and nothing is left behind."""
    sp = ray_spawner_factory(kube, start_timeout=6, extra_annotations={NOT_READY_CONTAINERS: NOTEBOOK_NODE_CONTAINER})
    sp.user_options = dict(RAY)
    with pytest.raises(ClusterStartError) as err:
        await asyncio.wait_for(sp.start(), 30)
    assert "could not join its Ray cluster ray-alice" in err.value.message
    assert NOTEBOOK_NODE_CONTAINER in err.value.message
    await sp.stop()
    assert ray_objects(kube) == []
    assert kube.get_object("pods", kube.ns, sp.pod_name) is None
