"""Per-user totals across a user's servers (rayspawner.quotas): the arithmetic, the
group rules and the messages, on spawner-like objects. The same rules through a real
JupyterHub with named servers: tests/test_cost_quotas_hub.py."""

from __future__ import annotations

import logging
import pytest
from traitlets import TraitError

from rayspawner.summary import local_size
from rayspawner.session import RayClusterSession
from rayspawner import quotas
from rayspawner.backends.local import LocalCluster, LocalNode
from rayspawner.config import RayConfig
from rayspawner.errors import ConfigError, InvalidOptions
from rayspawner.options import resolve_spec
from rayspawner.spec import ClusterRef


class User:
    def __init__(self, name: str = "alice", groups: tuple[str, ...] = ()):
        self.name, self.groups, self.spawners = name, [type("G", (), {"name": g})() for g in groups], {}


class Spawner(RayConfig):
    """What quotas reads of a spawner: traits, user, name, active, its ray_session."""

    def __init__(self, user: User, name: str = "", active: bool = False, **traits):
        super().__init__(**traits)
        self.user, self.name, self.active = user, name, active
        self.ray_session = RayClusterSession(logging.getLogger(__name__), lambda: name, None)
        user.spawners[name] = self

    def spec(self, **traits):
        cfg = RayConfig(ray_head_memory="1Gi", ray_worker_memory="1Gi", **traits)
        return resolve_spec(cfg, username=self.user.name, servername=self.name, namespace="ns", notebook_image="nb")

    def run(self, **traits):
        """This server is active and holds a cluster of this size."""
        self.ray_session.spec, self.active = self.spec(**traits), True
        return self


def test_no_limits_admit_anything() -> None:
    user = User()
    for i in range(5):
        Spawner(user, f"s{i}").run(ray_worker_replicas=4)
    new = Spawner(user, "new")
    spec = new.spec(ray_worker_replicas=4)
    assert quotas.admit(new, spec) is spec


def test_without_group_limits_the_users_groups_are_never_read() -> None:
    """KubeSpawner's contract: with nothing extra configured, nothing extra is touched (upstream's
    MockUser has no list of groups; reading it there failed 19 of KubeSpawner's own tests)."""

    class NoGroups(User):
        @property
        def groups(self):
            raise AssertionError("user.groups read although no group limit is configured")

        @groups.setter
        def groups(self, value):
            pass

    new = Spawner(NoGroups(), "", ray_user_max_clusters=2)
    spec = new.spec()
    assert quotas.admit(new, spec) is spec
    with pytest.raises(AssertionError, match="user.groups read"):
        quotas.admit(Spawner(NoGroups(), "", ray_user_group_limits={"g": {"clusters": 1}}), spec)


def test_cluster_count_counts_active_ray_servers_only() -> None:
    user = User()
    Spawner(user, "a").run()  # head 1 CPU + 1 worker
    Spawner(user, "stopped").ray_session.spec = Spawner(user, "x").spec()  # a stale spec of a stopped server
    plain = Spawner(user, "plain", active=True)  # no Ray
    assert quotas.usage_of(plain) is None
    new = Spawner(user, "b", ray_user_max_clusters=1)
    with pytest.raises(InvalidOptions) as e:
        quotas.admit(new, new.spec())
    msg = e.value.message
    assert e.value.status == 400 and isinstance(e.value, ValueError)
    assert (
        "2 Ray clusters with this one, over your limit of 1 Ray cluster (ray_user_max_clusters; 1 Ray cluster in use)"
        in msg
    )
    assert "server 'a' (cluster ray-alice--a: 2 CPU, 2Gi memory, 0 GPU)" in msg, msg
    assert "'stopped'" not in msg and "'plain'" not in msg
    user.spawners["a"].active = False  # stopped: the slot is free again
    assert quotas.admit(new, new.spec())


def test_cpu_memory_gpu_totals_name_what_is_in_use() -> None:
    user = User()
    Spawner(user, "").run(ray_worker_replicas=2)  # 3 CPU, 3Gi
    Spawner(user, "big").run(ray_worker_replicas=0, ray_worker_max_replicas=3)  # autoscaling: counted at max
    new = Spawner(user, "c", ray_user_max_total_cpu="8", ray_user_max_total_memory="8Gi", ray_user_max_total_gpu=0)
    assert quotas.admit(new, new.spec(ray_worker_replicas=0))  # 3 + 4 + 1 = 8 CPU, 8Gi
    with pytest.raises(InvalidOptions) as e:
        quotas.admit(new, new.spec(ray_worker_replicas=1))
    msg = e.value.message
    assert "9 CPU with this one, over your limit of 8 CPU (ray_user_max_total_cpu; 7 CPU in use)" in msg
    assert "9Gi memory with this one, over your limit of 8Gi memory" in msg
    assert (
        "your default server (cluster ray-alice: 3 CPU" in msg and "server 'big' (cluster ray-alice--big: 4 CPU" in msg
    )
    with pytest.raises(InvalidOptions, match=r"1 GPU with this one, over your limit of 0 GPUs"):
        quotas.admit(new, new.spec(ray_worker_replicas=0, ray_gpu_worker_replicas=1))


def test_groups_replace_the_global_limit_and_the_most_generous_wins() -> None:
    groups = {"small": {"clusters": 0}, "big": {"clusters": 3, "cpu": "64"}, "unlimited": {"cpu": None}}
    cfg = RayConfig(ray_user_max_clusters=1, ray_user_max_total_cpu="4", ray_user_group_limits=groups)
    lim = quotas.effective_limits(cfg, [])
    assert lim["clusters"] == (1, "ray_user_max_clusters") and lim["cpu"] == (4000, "ray_user_max_total_cpu")
    assert quotas.effective_limits(cfg, ["small"])["clusters"] == (0, "group 'small'")  # lowers
    both = quotas.effective_limits(cfg, ["small", "big"])
    assert both["clusters"] == (3, "group 'big'") and both["cpu"] == (64000, "group 'big'")  # raises
    assert quotas.effective_limits(cfg, ["big", "unlimited"])["cpu"] == (None, "group 'unlimited'")
    assert quotas.effective_limits(cfg, ["other"])["clusters"] == (1, "ray_user_max_clusters")

    user = User(groups=("small",))
    new = Spawner(user, "", ray_user_group_limits=groups)
    with pytest.raises(InvalidOptions, match=r"over your limit of 0 Ray clusters \(group 'small'"):
        quotas.admit(new, new.spec())


@pytest.mark.parametrize(
    "groups, problem",
    [
        ({"g": {"cpus": 2}}, "unknown key(s) 'cpus'"),
        ({"g": {"memory": "lots"}}, "ray_user_group_limits['g']['memory']"),
        ({"g": 3}, "must be a dict"),
    ],
)
def test_bad_group_limits_are_refused_at_load(groups, problem) -> None:
    with pytest.raises((ConfigError, TraitError)) as e:
        RayConfig(ray_user_group_limits=groups)
    assert problem in str(e.value)


def test_bad_global_limit_is_an_admin_error() -> None:
    user = User()
    new = Spawner(user, "", ray_user_max_total_memory="2GB")
    with pytest.raises(ConfigError, match="ray_user_max_total_memory"):
        quotas.admit(new, new.spec())


def test_sizes_after_a_hub_restart_come_from_stored_state() -> None:
    """RaySpawner keeps ``ray_size`` in its state; LocalRaySpawner its nodes; an old state
    with only the cluster's ref still counts as a cluster."""
    user = User()
    kube = Spawner(user, "kube")
    kube.active = True
    kube.ray_session.stored_size = {
        "cluster": "ray-alice--kube",
        "head": {"cpu": "1", "memory": "2Gi", "gpu": 0},
        "workers": [
            {"group": "workers", "replicas": 1, "min": 1, "max": 4, "cpu": "2", "memory": "4Gi", "gpu": 0},
            {"group": "gpu-workers", "replicas": 1, "min": 1, "max": 1, "cpu": "2", "memory": "4Gi", "gpu": 1},
        ],
    }
    u = quotas.usage_of(kube)
    assert (u.cpu_millis, u.memory_bytes, u.gpu) == (11000, 22 * 2**30, 1)
    assert (u.cpu_millis_min, u.memory_bytes_min, u.gpu_min) == (5000, 10 * 2**30, 1)
    local = Spawner(user, "local")
    local.active = True
    local.ray_session.stored_size = local_size(
        LocalCluster(
            "ray-alice--local",
            "c1",
            "/tmp/x",
            "/tmp",
            [
                LocalNode("head", 20000, 1, 0, 300 * 2**20, memory_bytes=724 * 2**20),
                LocalNode("workers-0", 20100, 2, 0, 300 * 2**20, memory_bytes=724 * 2**20),
            ],
        )
    )
    u = quotas.usage_of(local)
    assert (u.cluster, u.cpu_millis, u.memory_bytes, u.gpu) == ("ray-alice--local", 3000, 2 * 2**30, 0)
    old = Spawner(user, "old")
    old.active, old.ray_session.ref = True, ClusterRef("ray-alice--old", "ns", "pods")
    assert not quotas.usage_of(old).known
    new = Spawner(user, "new", ray_user_max_clusters=3)
    with pytest.raises(InvalidOptions) as e:
        quotas.admit(new, new.spec())
    assert "server 'old' (cluster ray-alice--old, size unknown)" in e.value.message
    assert quotas.backend_of(old) == "pods"
