"""No user can take over another user's Ray cluster through a name collision.

- a ``ray_cluster_name_template`` that cannot tell users and servers apart is refused
  when it is set (config or profile override), before any spawn;
- distinct user-servers get distinct names, including names chosen to collide
  (``alice-x`` vs alice's server ``x``, case and punctuation variants, long names);
  escaped names carry an 80-bit hash;
- no object name of one cluster is also an object name of another cluster;
- where an object of the same name exists anyway (the admin changed the template while
  servers ran), the spawn fails with a clear message and the first user's objects are
  untouched, on both backends.
"""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from rayspawner import naming
from rayspawner.config import RayConfig
from rayspawner.errors import ClusterStartError, ConfigError

from .spawner_fixtures import RESTRICTED_TRAITS, ray_objects, start, wait_until


@pytest.mark.parametrize(
    "template",
    [
        "ray-{username}-{servername}",
        "ray-{servername}",
        "ray-{username}",
        "{username}{servername}",
        "ray-{user_server:.8}",
        "ray-{user_server!r}",
        "ray--{user_server}",
        "Ray-{user_server}",
        "ray_{user_server}",
        "{user_server}-{user_server}",
        "ray-{nope}",
        "ray-{",
        "ray",
        "ray-{username}-{user_server}",
    ],
)
def test_ambiguous_templates_are_refused_at_config_load(template):
    with pytest.raises(ConfigError, match="ray_cluster_name_template"):
        RayConfig(ray_cluster_name_template=template)
    cfg = RayConfig()
    with pytest.raises(ConfigError, match="user_server"):  # a profile's kubespawner_override too
        cfg.ray_cluster_name_template = template
    assert cfg.ray_cluster_name_template == "ray-{user_server}"


@pytest.mark.parametrize(
    "template", ["ray-{user_server}", "{user_server}", "ray-{username}--{servername}", "rc-{user_server}-x1"]
)
def test_unambiguous_templates_are_accepted(template):
    assert RayConfig(ray_cluster_name_template=template).ray_cluster_name_template == template


def test_readable_names_stay_as_they_were():
    assert naming.cluster_name("ray-{user_server}", "alice") == "ray-alice"
    assert naming.cluster_name("ray-{user_server}", "alice", "dev") == "ray-alice--dev"
    assert naming.cluster_name("ray-{username}--{servername}", "alice", "dev") == "ray-alice--dev"
    assert naming.cluster_name("ray-{username}--{servername}", "alice") == "ray-alice"


NAMES = [
    "alice",
    "alice-x",
    "x",
    "alice--x",
    "alice-",
    "Alice",
    "ALICE",
    "alice.",
    "alice!",
    "alice@example.org",
    "alice-example-org",
    "x-alice",
    "a" * 40,
    "a" * 41,
    "a" * 60 + "b",
    "a" * 60 + "c",
    "9lives",
    "ray-alice",
    "élise",
    "elise",
    "x---1234abcd",
    "alice--x---deadbeef",
]
SERVERS = ["", "x", "dev", "gpu", "x-dev", "Dev", "a" * 30, "a" * 31]


@pytest.mark.parametrize("template", ["ray-{user_server}", "{user_server}", "rc-{username}--{servername}-z"])
def test_distinct_servers_get_distinct_names(template):
    seen: dict[str, tuple[str, str]] = {}
    for user, server in itertools.product(NAMES, SERVERS):
        name = naming.cluster_name(template, user, server)
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= naming.MAX_CLUSTER_NAME, name
        assert seen.setdefault(name, (user, server)) == (user, server), f"{name}: {seen[name]} and {(user, server)}"
    # the example: user alice-x vs alice's server x
    assert naming.cluster_name(template, "alice-x") != naming.cluster_name(template, "alice", "x")


def test_escaped_names_carry_a_long_hash():
    for user in ("Alice", "alice@example.org", "a" * 60):
        name = naming.cluster_name("ray-{user_server}", user)
        digest = name.rsplit("---", 1)[1]
        assert len(digest) == naming.HASH_CHARS >= 16  # 80 bits of base32, not KubeSpawner's 32-bit hex
    # the hash is over the raw names: KubeSpawner's slugs of these two agree on their prefix
    assert naming.cluster_name("ray-{user_server}", "Alice!") != naming.cluster_name("ray-{user_server}", "Alice?")


def cluster_object_names(cluster: str) -> set[tuple[str, str]]:
    return {
        ("Secret", naming.token_secret(cluster)),
        ("Service", naming.head_service(cluster)),
        ("Pod", naming.head_pod(cluster)),
        ("NetworkPolicy", naming.network_policy(cluster)),
        ("NetworkPolicy", naming.notebook_network_policy(cluster)),
        ("RayCluster", cluster),
        *(("Deployment", naming.worker_deployment(cluster, g)) for g in ("workers", "gpu-workers")),
    }


def test_no_object_name_is_shared_by_two_clusters():
    # alice's GPU worker Deployment was "ray-alice-gpu-workers", the workers of user alice-gpu
    clusters = {
        naming.cluster_name("ray-{user_server}", u, s)
        for u, s in itertools.product(NAMES + ["alice-gpu", "alice-gpu-workers", "alice-ray", "alice-head"], SERVERS)
    }
    owner: dict[tuple[str, str], str] = {}
    for c in clusters:
        for obj in cluster_object_names(c):
            assert owner.setdefault(obj, c) == c, f"{obj} belongs to {owner[obj]} and {c}"


# ---------------------------------------------------------------- against the API server
def snapshot(kube, cluster: str) -> dict:
    """(resource, name) -> (uid, resourceVersion, user label) of every object of one cluster (objects
    KubeRay makes carry no user label)."""
    out = {}
    resources = ["pods", "services", "secrets", "deployments", "networkpolicies"]
    if kube.kuberay:
        resources.append("rayclusters")
    for resource in resources:
        for obj in kube.list_objects(resource, kube.ns, label_selector=f"ray.io/cluster={cluster}"):
            meta = obj["metadata"]
            out[(resource, meta["name"])] = (
                meta["uid"],
                meta["resourceVersion"],
                (meta.get("labels") or {}).get(naming.LABEL_USERNAME, "alice"),
            )
    return out


@pytest.mark.parametrize("backend", ["pods", "kuberay"])
async def test_a_colliding_spawn_fails_and_leaves_the_first_cluster_alone(kube, ray_spawner_factory, backend):
    """The admin changes the template from ray-{user_server} to {user_server} while alice's server
    runs; user "ray-alice" then gets the name of alice's cluster. His spawn fails, saying so; alice's
    objects keep their uid and resourceVersion (nothing deleted, replaced or patched)."""
    alice = ray_spawner_factory(kube, "alice", ray_backend=backend)
    await start(alice)
    await wait_until(lambda: len(snapshot(kube, "ray-alice")) >= (3 if backend == "kuberay" else 5))
    await asyncio.sleep(0.5)  # the controllers settle (worker pods, status)
    before = snapshot(kube, "ray-alice")
    assert {v[2] for v in before.values()} == {"alice"}
    # worker pods' status moves on; the head pod (KubeRay's is named ray-alice-head-<suffix>) has settled
    heads = {
        ("pods", p["metadata"]["name"])
        for p in kube.list_objects(
            "pods", kube.ns, label_selector=f"ray.io/cluster=ray-alice,{naming.LABEL_COMPONENT}={naming.COMPONENT_HEAD}"
        )
    }
    assert len(heads) == 1 and heads <= before.keys(), heads

    mallory = ray_spawner_factory(kube, "ray-alice", ray_backend=backend, ray_cluster_name_template="{user_server}")
    with pytest.raises(ClusterStartError, match=r"already belongs to another server \(user 'alice', default server\)"):
        await start(mallory)
    assert mallory.ray_session.spec is None or mallory.ray_session.spec.name == "ray-alice"
    await asyncio.sleep(0.5)
    after = snapshot(kube, "ray-alice")
    stable = {k: v for k, v in before.items() if k[0] != "pods" or k in heads}
    assert {k: after.get(k) for k in stable} == stable
    assert all(v[2] == "alice" for v in after.values())
    st = await alice.poll()
    assert st is None, st  # alice's server (and cluster) are still fine

    await alice.stop()
    await wait_until(lambda: not ray_objects(kube), timeout=20)


async def test_kube_client_never_replaces_or_deletes_another_servers_object(kube, ray_spawner_factory):
    from rayspawner.backends.kube import KubeClient

    ns = kube.ns
    ray_spawner_factory(kube)  # points the shared client at the test cluster
    uids = {}
    for pod in ("jupyter-alice--x", "jupyter-x"):  # owners, so the API server's GC keeps the Secrets
        kube.create_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns},
                "spec": {
                    "securityContext": RESTRICTED_TRAITS["pod_security_context"],
                    "containers": [
                        {
                            "name": "c",
                            "image": "busybox",
                            "securityContext": {**RESTRICTED_TRAITS["container_security_context"], "runAsUser": 1000},
                        }
                    ],
                },
            }
        )
        uids[pod] = kube.get_object("pods", ns, pod)["metadata"]["uid"]
    labels = naming.cluster_labels("ray-x", "alice", "x")
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "ray-x-ray-token",
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": "jupyter-alice--x", "uid": uids["jupyter-alice--x"]}
                ],
            },
            "data": {"auth_token": "YWxpY2U="},
        }
    )
    theirs = kube.get_object("secrets", ns, "ray-x-ray-token")["metadata"]
    client = KubeClient(retry_timeout=5)
    mine = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "ray-x-ray-token",
            "namespace": ns,
            "labels": naming.cluster_labels("ray-x", "x", ""),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "jupyter-x", "uid": uids["jupyter-x"]}],
        },
        "stringData": {"auth_token": "mallory"},
    }
    with pytest.raises(ClusterStartError, match="belongs to another server") as e:
        await client.create(mine)
    assert e.value.reason_label == "name_conflict"
    # this spawn's cleanup deletes by name: it must leave the other server's objects alone
    assert await client.delete("Secret", ns, "ray-x-ray-token") is False
    assert await client.delete("Pod", ns, "ray-x-head") is False
    now = kube.get_object("secrets", ns, "ray-x-ray-token")
    assert (now["metadata"]["uid"], now["metadata"]["resourceVersion"]) == (theirs["uid"], theirs["resourceVersion"])
    assert now["data"]["auth_token"] == "YWxpY2U="

    # the same server's stale object (an earlier notebook pod) is still replaced, as before
    stale = dict(
        mine, metadata=dict(mine["metadata"], name="ray-y-ray-token", labels=naming.cluster_labels("ray-y", "x", ""))
    )
    kube.create_object(stale)
    fresh = dict(
        stale,
        metadata=dict(
            stale["metadata"],
            ownerReferences=[
                {"apiVersion": "v1", "kind": "Pod", "name": "jupyter-alice--x", "uid": uids["jupyter-alice--x"]}
            ],
        ),
    )
    await KubeClient(retry_timeout=5).create(fresh)
    owners = kube.get_object("secrets", ns, "ray-y-ray-token")["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == [uids["jupyter-alice--x"]]
