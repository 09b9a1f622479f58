"""Every RayCluster the spawner can produce is valid for KubeRay v1.7.0.

- against the real CRD schema (``../shared/schemas/kuberay-v1.7.0-rayclusters.crd.yaml``,
  ``spec.versions[v1].schema.openAPIV3Schema``) with jsonschema, made strict the
  way the API server's strict field validation is: unknown fields are errors
  wherever the schema lists properties (and does not preserve unknown fields),
  ``nullable`` is honoured and int32/int64 ranges are checked;
- the embedded pod templates, wrapped in a Pod, and the NetworkPolicy with
  ``kubernetes-validate`` in strict mode;
- for each profile/option combination of ``jupyterhub_config/z2jh/values.yaml``
  (with the hub's extraConfig) and a matrix over the traits (autoscaling, GPUs,
  auth, NetworkPolicy, volumes, tolerations, nodeSelector, a separate Ray image).
"""

from __future__ import annotations

import functools

import copy
import dataclasses
import inspect
import itertools
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from rayspawner import naming
from rayspawner.config import RayConfig
from rayspawner.env import notebook_env
from rayspawner.manifests import common, kuberay, pods
from rayspawner.options import resolve_spec
from rayspawner.spec import RayClusterSpec

from .schemas import KUBERAY_CRD, load_schema
from .test_options import apply_profile, initialized

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "schemas"
CRD = SCHEMAS / "kuberay-v1.7.0-rayclusters.crd.yaml"
VALUES = ROOT / "jupyterhub_config" / "z2jh" / "values.yaml"
K8S_VERSION = "1.33.0"
NOTEBOOK_IMAGE = "quay.io/rayspawner/notebook:2.60.0"
OWNER = common.owner_reference("jupyter-alice", "0f0e0d0c-0b0a-0908-0706-050403020100")
NOTEBOOK_SELECTOR = {"component": "singleuser-server", naming.LABEL_USERNAME: "alice", naming.LABEL_SERVERNAME: ""}

requires_crd = pytest.mark.skipif(
    not CRD.exists(), reason=f"KubeRay CRD schema not found at {CRD} (../shared/schemas absent)"
)


# ------------------------------------------------------------------ the validator
def _strict(node: Any) -> Any:
    """A copy of an OpenAPI v3 (structural) schema as a strict JSON Schema."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    for key in ("properties", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _strict(v) for k, v in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = _strict(out[key])
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _format_checker():
    from jsonschema import FormatChecker

    checker = FormatChecker()

    def int_range(bits: int):
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return lambda v: not isinstance(v, int) or isinstance(v, bool) or lo <= v <= hi

    checker.checks("int32")(int_range(32))
    checker.checks("int64")(int_range(64))
    return checker


@functools.cache
def _crd_validator() -> Any:
    from jsonschema import Draft7Validator

    doc = load_schema(KUBERAY_CRD)
    assert doc["kind"] == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == "RayCluster"
    v1 = next(v for v in doc["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(v1["schema"]["openAPIV3Schema"])
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=_format_checker())


@pytest.fixture(scope="module")
def crd_validator():
    if not CRD.exists():
        pytest.skip(f"KubeRay CRD schema not found at {CRD} (../shared/schemas absent)")
    return _crd_validator()


def crd_errors(validator, obj: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(obj)]


def k8s_errors(obj: dict) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [str(e).splitlines()[0] + f" (at {list(e.path)})"]
    return []


def as_pod(template: dict, name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**copy.deepcopy(template.get("metadata") or {}), "name": name, "namespace": "jhub"},
        "spec": copy.deepcopy(template["spec"]),
    }


# ------------------------------------------------------------------ every spec the spawner can produce
def _spec(cfg: RayConfig, servername: str = "") -> RayClusterSpec:
    return resolve_spec(
        cfg,
        username="alice",
        servername=servername,
        namespace="jhub",
        notebook_image=NOTEBOOK_IMAGE,
        notebook_selector=NOTEBOOK_SELECTOR,
    )


def _hub_config(values: dict) -> dict[str, Any]:
    """The c.RaySpawner settings of the chart's extraConfig snippets."""
    from traitlets.config import Config

    c = Config()
    for snippet in (values.get("hub", {}).get("extraConfig") or {}).values():
        exec(compile(snippet, str(VALUES), "exec"), {"c": c})  # noqa: S102 - our own example config
    traits = set(RayConfig.class_trait_names())
    return {k: v for k, v in c.RaySpawner.items() if k in traits}


def example_specs() -> Iterator[tuple[str, RayClusterSpec]]:
    """Each profile x each combination of its option choices, from the z2jh example values."""
    if not VALUES.exists():
        return
    values = yaml.safe_load(VALUES.read_text())
    hub = _hub_config(values)
    profiles = initialized(values["singleuser"]["profileList"])
    for profile in profiles:
        options = profile.get("profile_options") or {}
        names = list(options)
        for combo in itertools.product(*(list(options[n]["choices"]) for n in names)):
            user_options = {"profile": profile["slug"], **dict(zip(names, combo))}
            cfg = RayConfig(**hub)
            apply_profile(cfg, user_options, profiles)
            if cfg.ray_enabled:
                yield "z2jh-" + "-".join([profile["slug"], *combo]), _spec(cfg)


VOLUME = {"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}
MOUNT = {"name": "datasets", "mountPath": "/data", "readOnly": True}
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
MATRIX_AXES: dict[str, list[dict[str, Any]]] = {
    "scaling": [
        {},
        {
            "ray_worker_replicas": 1,
            "ray_worker_min_replicas": 0,
            "ray_worker_max_replicas": 4,
            "ray_autoscaler_idle_timeout_seconds": 120,
            "ray_autoscaler_upscaling_mode": "Conservative",
        },
        {"ray_worker_replicas": 0},
    ],
    "gpu": [{}, {"ray_gpu_worker_replicas": 1, "ray_gpu_worker_gpus": 1, "ray_head_gpu": 0}],
    "security": [
        {},
        {"ray_auth_enabled": False},
        {"ray_network_policy_enabled": False},
        {
            "ray_network_policy_extra_ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                }
            ]
        },
    ],
    "placement": [
        {},
        {
            "ray_node_selector": {"node-pool": "ray"},
            "ray_tolerations": [TOLERATION],
            "ray_volumes": [VOLUME],
            "ray_volume_mounts": [MOUNT],
            "ray_extra_env": {"OMP_NUM_THREADS": "1"},
            "ray_extra_labels": {"team": "ml"},
            "ray_extra_annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
        },
    ],
    "image": [{}, {"ray_image": "quay.io/rayspawner/ray:2.60.0", "ray_image_pull_policy": "IfNotPresent"}],
}


def matrix_specs() -> Iterator[tuple[str, RayClusterSpec]]:
    axes = list(MATRIX_AXES)
    for idx in itertools.product(*(range(len(MATRIX_AXES[a])) for a in axes)):
        settings: dict[str, Any] = {"ray_max_workers": 8, "ray_max_total_gpu": 4}
        for axis, i in zip(axes, idx):
            settings.update(MATRIX_AXES[axis][i])
        name = "matrix-" + "-".join(f"{a}{i}" for a, i in zip(axes, idx))
        yield name, _spec(RayConfig(**settings), servername="gpu" if idx[1] else "")


ALL_SPECS = dict(itertools.chain(example_specs(), matrix_specs()))


def test_the_matrix_covers_what_matters() -> None:
    specs = list(ALL_SPECS.values())
    assert any(s.autoscaling for s in specs) and any(not s.autoscaling for s in specs)
    assert any(len(s.worker_groups) == 2 for s in specs)
    assert any(s.auth_enabled for s in specs) and any(not s.auth_enabled for s in specs)
    assert any(common.wants_version_check(s) for s in specs)
    if VALUES.exists():
        assert sum(1 for k in ALL_SPECS if k.startswith("z2jh-")) >= 8, sorted(ALL_SPECS)


# ------------------------------------------------------------------ schema validation
@requires_crd
@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_raycluster_validates_against_crd_and_pod_schema(name: str, crd_validator) -> None:
    spec = ALL_SPECS[name]
    objs = kuberay.cluster_objects(spec, OWNER)
    cluster = objs[-1]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert crd_errors(crd_validator, cluster) == []
    for group, template in kuberay.pod_templates(cluster):
        assert k8s_errors(as_pod(template, f"{spec.name}-{group}")) == [], group
    for obj in objs[:-1]:
        assert obj["kind"] == "NetworkPolicy"
        assert k8s_errors(obj) == []
    # the head Service override, as a Service (KubeRay fills in spec)
    svc = {"apiVersion": "v1", "kind": "Service", **cluster["spec"]["headGroupSpec"]["headService"]}
    svc["metadata"] = {**svc["metadata"], "namespace": "jhub"}
    assert k8s_errors(svc) == []


BROKEN: list[tuple[str, Any]] = [
    ("unknown top-level spec field", lambda rc: rc["spec"].__setitem__("headGroupSpecs", {})),
    (
        "unknown field in a container",
        lambda rc: rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__("bogus", 1),
    ),
    (
        "unknown field in pod template metadata",
        lambda rc: rc["spec"]["headGroupSpec"]["template"]["metadata"].__setitem__("uid", "x"),
    ),
    (
        "rayStartParams value not a string",
        lambda rc: rc["spec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 1),
    ),
    ("replicas as a string", lambda rc: rc["spec"]["workerGroupSpecs"][0].__setitem__("replicas", "2")),
    ("replicas beyond int32", lambda rc: rc["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", 2**31)),
    ("worker group without template", lambda rc: rc["spec"]["workerGroupSpecs"][0].pop("template")),
    ("worker group without groupName", lambda rc: rc["spec"]["workerGroupSpecs"][0].pop("groupName")),
    ("head group missing", lambda rc: rc["spec"].pop("headGroupSpec")),
    ("invalid upscalingMode", lambda rc: rc["spec"].__setitem__("autoscalerOptions", {"upscalingMode": "Fast"})),
    ("invalid auth mode", lambda rc: rc["spec"].__setitem__("authOptions", {"mode": "password"})),
    ("enableInTreeAutoscaling not a boolean", lambda rc: rc["spec"].__setitem__("enableInTreeAutoscaling", "true")),
    (
        "container port as a string",
        lambda rc: rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0].__setitem__(
            "containerPort", "6379"
        ),
    ),
    (
        "env var without name",
        lambda rc: rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append({"value": "x"}),
    ),
]


@requires_crd
@pytest.mark.parametrize("what,breaker", BROKEN, ids=[b[0] for b in BROKEN])
def test_validator_rejects_broken_rayclusters(what: str, breaker, crd_validator) -> None:
    rc = kuberay.raycluster(ALL_SPECS[sorted(ALL_SPECS)[0]], OWNER)
    assert crd_errors(crd_validator, rc) == []
    broken = copy.deepcopy(rc)
    breaker(broken)
    assert crd_errors(crd_validator, broken), f"validator accepted a RayCluster with {what}"


def test_kubernetes_validate_rejects_broken_pod() -> None:
    rc = kuberay.raycluster(next(iter(ALL_SPECS.values())), OWNER)
    pod = as_pod(rc["spec"]["headGroupSpec"]["template"], "x")
    assert k8s_errors(pod) == []
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = "yes"
    assert k8s_errors(pod)


# ------------------------------------------------------------------ semantics
@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_raycluster_semantics(name: str) -> None:
    spec = ALL_SPECS[name]
    rc = kuberay.raycluster(spec, OWNER)
    meta, body = rc["metadata"], rc["spec"]
    # identity, labels, owner
    assert meta["name"] == spec.name and meta["namespace"] == "jhub"
    assert meta["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGED_BY
    assert meta["labels"][naming.LABEL_CLUSTER] == spec.name
    assert meta["ownerReferences"] == [OWNER]
    assert body["rayVersion"] == spec.ray_version
    # head service pinned, and it is what the notebook's RAY_ADDRESS points at
    head = body["headGroupSpec"]
    assert head["headService"]["metadata"]["name"] == f"{spec.name}-head-svc"
    host = f"{spec.name}-head-svc.jhub.svc.cluster.local"
    expected = f"{host}:6379" if spec.connect_mode == "driver" else f"ray://{host}:10001"
    assert notebook_env(spec)["RAY_ADDRESS"] == expected
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    # every pod template: our labels (the ray-pods reflector selects on managed-by), hardening, limits
    for group, template in kuberay.pod_templates(rc):
        labels = template["metadata"]["labels"]
        assert labels[naming.LABEL_MANAGED_BY] == naming.MANAGED_BY and labels[naming.LABEL_CLUSTER] == spec.name
        assert labels[naming.LABEL_COMPONENT] == (naming.COMPONENT_HEAD if group == "head" else naming.COMPONENT_WORKER)
        assert template["metadata"].get("annotations", {}) == spec.pod_annotations
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True and "runAsUser" not in pod["securityContext"]
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert {"cpu", "memory"} <= set(c["resources"]["limits"])
            assert "command" not in c or c["name"] == common.VERSION_CONTAINER  # KubeRay writes `ray start`
            for e in c.get("env", []):
                assert not (e["name"] == "RAY_AUTH_TOKEN" and "value" in e), "token as a plain value"
        assert pod.get("nodeSelector", {}) == spec.node_selector
        assert pod.get("tolerations", []) == list(spec.tolerations)
    # worker groups
    groups = {g["groupName"]: g for g in body["workerGroupSpecs"]}
    assert list(groups) == [g.name for g in spec.worker_groups]
    for g in spec.worker_groups:
        wg = groups[g.name]
        assert (wg["replicas"], wg["minReplicas"], wg["maxReplicas"]) == (g.replicas, g.min_replicas, g.max_replicas)
        limits = wg["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits.get(spec.gpu_resource_name) == (str(g.resources.gpu) if g.resources.gpu else None)
        assert wg["rayStartParams"]["num-gpus"] == str(g.resources.gpu)
    # autoscaling
    if spec.autoscaling:
        assert body["enableInTreeAutoscaling"] is True
        opts = body["autoscalerOptions"]
        assert opts["idleTimeoutSeconds"] == spec.idle_timeout_seconds and opts["upscalingMode"] == spec.upscaling_mode
        assert opts["resources"]["limits"] and opts["securityContext"]["allowPrivilegeEscalation"] is False
        # the API token goes to the autoscaler sidecar only, never to the Ray container
        volumes = {v["name"] for v in head["template"]["spec"]["volumes"]}
        assert kuberay.AUTOSCALER_TOKEN_VOLUME in volumes
        assert [m["mountPath"] for m in opts["volumeMounts"]] == [kuberay.SERVICE_ACCOUNT_DIR]
        ray_mounts = {m["name"] for m in head["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert kuberay.AUTOSCALER_TOKEN_VOLUME not in ray_mounts
    else:
        assert "enableInTreeAutoscaling" not in body and "autoscalerOptions" not in body
        assert all(v["name"] != kuberay.AUTOSCALER_TOKEN_VOLUME for v in head["template"]["spec"]["volumes"])
    # auth
    if spec.auth_enabled:
        assert body["authOptions"] == {"mode": "token", "secretName": spec.secret_name}
    else:
        assert "authOptions" not in body


@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_same_pods_as_the_pods_backend(name: str) -> None:
    """Image, resources, security, /dev/shm, env, scheduling and volumes match manifests/pods.py."""
    spec = ALL_SPECS[name]
    rc = kuberay.raycluster(spec, OWNER)
    by_group = dict(kuberay.pod_templates(rc))
    pairs = [("head", pods.head_pod(spec, OWNER)["spec"], spec.head)]
    pairs += [
        (g.name, pods.worker_deployment(spec, g, OWNER)["spec"]["template"]["spec"], g.resources)
        for g in spec.worker_groups
    ]
    for group, pod_spec, res in pairs:
        ours = by_group[group]["spec"]
        volumes = [v for v in ours["volumes"] if v["name"] != kuberay.AUTOSCALER_TOKEN_VOLUME]
        assert volumes == pod_spec["volumes"]
        for key in (
            "securityContext",
            "automountServiceAccountToken",
            "enableServiceLinks",
            "nodeSelector",
            "tolerations",
            "initContainers",
        ):
            assert ours.get(key) == pod_spec.get(key), key
        a, b = ours["containers"][0], pod_spec["containers"][0]
        for key in ("image", "imagePullPolicy", "env", "resources", "securityContext", "volumeMounts", "livenessProbe"):
            assert a.get(key) == b.get(key), (group, key)
        # ray start is told the same sizes
        group_spec = (
            rc["spec"]["headGroupSpec"]
            if group == "head"
            else next(g for g in rc["spec"]["workerGroupSpecs"] if g["groupName"] == group)
        )
        params = group_spec["rayStartParams"]
        args = " ".join(b["command"]) + " " + " ".join(b.get("args", []))
        for key in ("num-cpus", "num-gpus", "memory", "object-store-memory"):
            assert re.search(rf"--{key}={params[key]}\b", args), (group, key)
        assert int(params["object-store-memory"]) <= res.memory_bytes


def test_no_secret_value_in_manifests() -> None:
    for spec in ALL_SPECS.values():
        text = yaml.safe_dump(kuberay.cluster_objects(spec, OWNER))
        assert "stringData" not in text and "\ndata:" not in text


def test_autoscaling_api_server_egress_is_a_head_only_policy_of_its_own() -> None:
    spec = next(s for s in ALL_SPECS.values() if s.autoscaling and s.network_policy)
    # the Ray pods' shared policy (head and workers) opens no API server port
    assert kuberay.network_policy(spec, OWNER) == common.network_policy(spec, OWNER)
    policies = {o["metadata"]["name"]: o for o in kuberay.cluster_objects(spec, OWNER) if o["kind"] == "NetworkPolicy"}
    api = policies[naming.api_server_network_policy(spec.name)]
    assert api["spec"]["podSelector"]["matchLabels"][naming.LABEL_COMPONENT] == naming.COMPONENT_HEAD
    assert api["spec"]["policyTypes"] == ["Egress"]
    assert api["spec"]["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]
    assert api["metadata"]["ownerReferences"] == [OWNER]
    pinned = dataclasses.replace(spec, api_server_cidrs=("10.96.0.1/32", "192.0.2.10/32"))
    rule = kuberay.api_server_policy(pinned, OWNER)["spec"]["egress"][0]
    assert rule["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "192.0.2.10/32"}}]
    plain = next(s for s in ALL_SPECS.values() if not s.autoscaling and s.network_policy)
    names = [o["metadata"]["name"] for o in kuberay.cluster_objects(plain, OWNER)]
    assert naming.api_server_network_policy(plain.name) not in names


def test_cluster_objects_signature_matches_pods_backend() -> None:
    assert inspect.signature(kuberay.cluster_objects) == inspect.signature(pods.cluster_objects)
    spec = next(iter(ALL_SPECS.values()))
    kinds = [o["kind"] for o in kuberay.cluster_objects(spec, None)]
    policies = (
        ["NetworkPolicy", "NetworkPolicy"]
        if spec.network_policy and spec.notebook_selector
        else ["NetworkPolicy"]
        if spec.network_policy
        else []
    )
    assert kinds == policies + ["RayCluster"]
    assert kinds == [o["kind"] for o in kuberay.cluster_objects(spec, None)]
    assert "ownerReferences" not in kuberay.raycluster(spec, None)["metadata"]
