"""The deploy configurations under jupyterhub_config/ are valid and do what they say.

- z2jh/values.yaml validates against the chart's values schema (../shared/schemas);
- the hub config it embeds (singleuser.profileList + hub.extraConfig), and the ODH
  ConfigMap's config, load in JupyterHub's config loader with rayspawner and give
  the documented profiles (a subprocess: real config loading, real profile
  application, real validation into a RayClusterSpec, against the real test cluster as the
  hub's ServiceAccount);
- every built-in object validates with kubernetes-validate (strict); ImageStream
  (OpenShift-only, not in kubernetes-validate) against a small schema of our own;
- kubectl parses every file (client and server dry-run against the real test cluster);
  the ODH kustomization builds.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml

from testcluster.fixtures import Kube

from .schemas import KUBERAY_CRD, Z2JH_VALUES, load_schema

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "jupyterhub_config"
VALUES = CONFIG / "z2jh" / "values.yaml"
SCHEMAS = ROOT.parent / "shared" / "schemas"
K8S_VERSION = "1.33"
NOT_OBJECTS = {"kustomization.yaml", "values.yaml"}

# What the docs (jupyterhub_config/z2jh/README.md) promise for each profile with its default options:
# slug -> (ray enabled, CPU workers, worker CPU, worker memory, GPU workers, option -> choices)
DOCUMENTED_PROFILES: dict[str, tuple] = {
    "plain": (False, None, None, None, None, {}),
    "ray": (True, 2, "1", "2Gi", 0, {"workers": ["1", "2", "4"]}),
    "ray-large": (True, 4, "4", "16Gi", 0, {"workers": ["2", "4", "6"]}),
    "ray-gpu": (True, 1, "4", "16Gi", 1, {"gpu_workers": ["1", "2"]}),
}


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def _yaml_files() -> list[Path]:
    return sorted(p for p in CONFIG.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in _yaml_files():
        if path.name in NOT_OBJECTS:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def _shared_schema(name: str) -> Path:
    path = SCHEMAS / name
    if not SCHEMAS.is_dir():
        pytest.skip(f"../shared/schemas is absent (not a project checkout): cannot validate against {name}")
    assert path.is_file(), f"{path} missing from ../shared/schemas"
    return path


# ----------------------------------------------------------------- z2jh values
def _without_required(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [_without_required(v) for v in schema]
    return schema


def test_z2jh_values_validate_against_the_chart_schema() -> None:
    """Helm validates the *merged* values (chart defaults + ours); ours alone lack only the
    chart-default keys the schema marks required. Everything else must pass unchanged."""
    schema = load_schema(Z2JH_VALUES)
    values = _values()
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(values))
    not_required = [e for e in errors if e.validator != "required"]
    assert not not_required, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in not_required)
    jsonschema.validate(values, _without_required(schema), cls=jsonschema.Draft7Validator)
    # and the schema really is strict about unknown keys (a typo would be caught)
    typo = copy.deepcopy(values)
    typo["singleuser"]["profilelist"] = typo["singleuser"].pop("profileList")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, _without_required(schema), cls=jsonschema.Draft7Validator)


def test_z2jh_singleuser_policy_stays_closed() -> None:
    """The chart's singleuser policy stays on with private IPs closed: Ray needs no opening
    here (each server's own notebook-side policy opens its Ray traffic, see test_security_netpol)."""
    netpol = _values()["singleuser"]["networkPolicy"]
    assert netpol.get("enabled", True) is True
    assert netpol.get("egressAllowRules", {}).get("privateIPs", False) is False, "do not open all private IPs"


def test_z2jh_hub_image_and_extra_config() -> None:
    hub = _values()["hub"]
    assert "rayspawner-hub" in hub["image"]["name"], "z2jh's stock hub image has no rayspawner"
    code = "\n".join(hub["extraConfig"][k] for k in sorted(hub["extraConfig"]))
    compile(code, "extraConfig", "exec")
    assert 'c.JupyterHub.spawner_class = "ray"' in code
    for limit in ("ray_max_workers", "ray_max_total_cpu", "ray_max_total_memory", "ray_max_total_gpu"):
        assert f"c.RaySpawner.{limit} =" in code


def test_odh_profiles_equal_the_z2jh_profiles() -> None:
    cm = next(doc for path, doc in _objects() if doc.get("kind") == "ConfigMap" and "odh" in path.parts)
    assert yaml.safe_load(cm["data"]["profiles.yaml"]) == _values()["singleuser"]["profileList"]


# ------------------------------------------------ hub config in JupyterHub's loader
LOADER = textwrap.dedent(
    """
    import asyncio, json, sys
    from jupyterhub.app import JupyterHub
    from rayspawner import RaySpawner

    app = JupyterHub()
    app.load_config_file(sys.argv[1])
    result = {"spawner_class": f"{app.spawner_class.__module__}.{app.spawner_class.__name__}", "profiles": {}}

    async def main():
        base = RaySpawner(config=app.config, _mock=True, ray_orphan_sweep_interval=0)
        result["limits"] = {k: getattr(base, k) for k in ("ray_max_workers", "ray_max_total_gpu", "ray_max_total_cpu")}
        result["image"] = base.image
        result["ray_image"] = base.ray_image
        profiles = base._get_initialized_profile_list(base.profile_list)
        for profile in profiles:
            cases = [{}]
            for opt, spec in (profile.get("profile_options") or {}).items():
                cases += [{opt: choice} for choice in spec["choices"]]
            options = {o: list(s["choices"]) for o, s in (profile.get("profile_options") or {}).items()}
            out = result["profiles"][profile["slug"]] = {"options": options, "cases": []}
            for opts in cases:
                sp = RaySpawner(config=app.config, _mock=True, ray_orphan_sweep_interval=0)
                sp.user_options = {"profile": profile["slug"], **opts}
                await sp.load_user_options()
                print("loaded", profile["slug"], opts, file=sys.stderr, flush=True)
                spec = sp.ray_session.spec
                case = {"options": opts, "ray_enabled": sp.ray_enabled}
                if spec:
                    groups = {g.name: [g.replicas, g.resources.cpu, g.resources.memory, g.resources.gpu]
                              for g in spec.worker_groups}
                    case.update(backend=sp.ray_session.backend.kind, image=spec.image, auth=spec.auth_enabled,
                                netpol=spec.network_policy, groups=groups,
                                head=[spec.head.cpu, spec.head.memory], tolerations=list(spec.tolerations))
                out["cases"].append(case)
        # over a limit: the REST API cannot ask for more than the admin allows
        sp = RaySpawner(config=app.config, _mock=True, ray_orphan_sweep_interval=0)
        sp.user_options = {"profile": "ray", "workers": "64"}
        try:
            await sp.load_user_options()
            result["bad_option"] = "accepted"
        except Exception as e:
            result["bad_option"] = f"{type(e).__name__}: {e}"
        for refl in list(RaySpawner.reflectors.values()):
            try:
                await refl.stop()
            except asyncio.CancelledError:
                pass

    asyncio.run(main())
    print("RESULT " + json.dumps(result))
    """
)


def _z2jh_config_py(values: dict[str, Any], namespace: str) -> str:
    """What the chart's jupyterhub_config.py does with these values (the parts that matter here):
    singleuser.* -> c.KubeSpawner.*, then each hub.extraConfig snippet in key order."""
    su = values["singleuser"]
    lines = [
        "c = get_config()  # noqa",
        "c.JupyterHub.spawner_class = 'kubespawner.KubeSpawner'",
        f"c.KubeSpawner.namespace = {namespace!r}",
        f"c.KubeSpawner.image = {su['image']['name'] + ':' + su['image']['tag']!r}",
        f"c.KubeSpawner.uid = {su.get('uid')!r}",
        f"c.KubeSpawner.profile_list = {su['profileList']!r}",
    ]
    for key in sorted(values["hub"]["extraConfig"]):
        lines.append(f"# --- extraConfig {key}\n" + values["hub"]["extraConfig"][key])
    return "\n".join(lines) + "\n"


def _load_in_jupyterhub(config_py: Path, kube: Kube, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig_path), **(extra_env or {})}
    try:
        r = subprocess.run(
            [sys.executable, "-c", LOADER, str(config_py)],
            capture_output=True,
            text=True,
            env=env,
            cwd=config_py.parent,
            timeout=300,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the config loader hung; stderr so far:\n{(e.stderr or b'')[-4000:]!r}") from None
    assert r.returncode == 0, r.stderr[-4000:]
    line = next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _check_documented_profiles(result: dict[str, Any]) -> None:
    assert result["spawner_class"] == "rayspawner.spawner.RaySpawner"
    assert list(result["profiles"]) == list(DOCUMENTED_PROFILES)
    for slug, (enabled, workers, cpu, memory, gpu_workers, options) in DOCUMENTED_PROFILES.items():
        got = result["profiles"][slug]
        assert got["options"] == options, slug
        default = got["cases"][0]
        assert default["ray_enabled"] is enabled, slug
        if not enabled:
            assert "groups" not in default
            continue
        assert default["backend"] == "kuberay"  # the test cluster runs KubeRay: "auto" chose it
        assert default["auth"] and default["netpol"], f"{slug}: token auth and NetworkPolicy must stay on"
        assert default["groups"]["workers"][:3] == [workers, cpu, memory], (slug, default)
        assert default["groups"].get("gpu-workers", [0])[0] == gpu_workers, (slug, default)
        if gpu_workers:
            assert default["groups"]["gpu-workers"][3] == 1
            assert any(t.get("key") == "nvidia.com/gpu" for t in default["tolerations"])
        for case in got["cases"][1:]:
            ((opt, choice),) = case["options"].items()
            group = "gpu-workers" if opt == "gpu_workers" else "workers"
            assert case["groups"][group][0] == int(choice), (slug, case)
    assert "InvalidOptions" in result["bad_option"] and "64" in result["bad_option"], result["bad_option"]


def test_z2jh_hub_config_loads_in_jupyterhub_and_gives_the_documented_profiles(tmp_path: Path, kube: Kube) -> None:
    config_py = tmp_path / "jupyterhub_config.py"
    config_py.write_text(_z2jh_config_py(_values(), kube.ns))
    result = _load_in_jupyterhub(config_py, kube)
    _check_documented_profiles(result)
    su = _values()["singleuser"]
    assert result["image"] == f"{su['image']['name']}:{su['image']['tag']}"
    assert result["limits"]["ray_max_total_gpu"] == 2 and result["limits"]["ray_max_workers"] == 8
    assert result["profiles"]["ray"]["cases"][0]["image"].endswith("rayspawner-ray:2.60.0-py311")


def test_odh_hub_config_loads_in_jupyterhub_and_gives_the_documented_profiles(tmp_path: Path, kube: Kube) -> None:
    cm = next(doc for path, doc in _objects() if doc.get("kind") == "ConfigMap" and "odh" in path.parts)
    confdir = tmp_path / "etc-rayspawner"
    confdir.mkdir()
    for key, text in cm["data"].items():
        (confdir / key).write_text(text)
    config_py = tmp_path / "jupyterhub_config.py"
    config_py.write_text(f"c = get_config()  # noqa\nload_subconfig({str(confdir / 'rayspawner_config.py')!r})\n")
    result = _load_in_jupyterhub(config_py, kube, {"RAYSPAWNER_CONFIG_DIR": str(confdir), "POD_NAMESPACE": kube.ns})
    _check_documented_profiles(result)
    internal = f"image-registry.openshift-image-registry.svc:5000/{kube.ns}/"  # the hub's own namespace
    assert result["image"] == internal + "rayspawner-notebook:2.60.0-py311"
    assert result["ray_image"] == internal + "rayspawner-ray:2.60.0-py311"


# --------------------------------------------------------- object validation
IMAGESTREAM_SCHEMA: dict[str, Any] = {
    # Our own, small: OpenShift's image.openshift.io/v1 ImageStream as far as we use it.
    # kubernetes-validate ships only upstream Kubernetes kinds.
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "image.openshift.io/v1"},
        "kind": {"const": "ImageStream"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "lookupPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["local"],
                    "properties": {"local": {"type": "boolean"}},
                },
                "dockerImageRepository": {"type": "string"},
                "tags": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                            "from": {
                                "type": "object",
                                "required": ["kind", "name"],
                                "additionalProperties": False,
                                "properties": {
                                    "kind": {"enum": ["DockerImage", "ImageStreamTag", "ImageStreamImage"]},
                                    "name": {"type": "string", "minLength": 1},
                                    "namespace": {"type": "string"},
                                },
                            },
                            "reference": {"type": "boolean"},
                            "generation": {"type": "integer"},
                            "importPolicy": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "insecure": {"type": "boolean"},
                                    "scheduled": {"type": "boolean"},
                                    "importMode": {"enum": ["Legacy", "PreserveOriginal"]},
                                },
                            },
                            "referencePolicy": {
                                "type": "object",
                                "required": ["type"],
                                "additionalProperties": False,
                                "properties": {"type": {"enum": ["Source", "Local"]}},
                            },
                        },
                    },
                },
            },
        },
    },
}


def _validate_object(obj: dict[str, Any]) -> None:
    kind, api = obj.get("kind"), obj.get("apiVersion", "")
    if kind == "ImageStream":
        jsonschema.validate(obj, IMAGESTREAM_SCHEMA)
    elif api.startswith("ray.io/"):
        crd = load_schema(KUBERAY_CRD)
        version = next(v for v in crd["spec"]["versions"] if v["name"] == api.split("/")[1])
        jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_object_validates() -> None:
    seen: dict[str, int] = {}
    for path, obj in _objects():
        try:
            _validate_object(obj)
        except Exception as e:  # noqa: BLE001 - report file and object
            pytest.fail(
                f"{path.relative_to(ROOT)}: {obj.get('kind')} {obj.get('metadata', {}).get('name')}: {str(e)[:800]}"
            )
        seen[obj["kind"]] = seen.get(obj["kind"], 0) + 1
    assert {"Role", "RoleBinding", "ConfigMap", "ImageStream"} <= set(seen), seen


def test_object_validation_is_strict() -> None:
    role = next(o for _, o in _objects() if o["kind"] == "Role")
    bad = copy.deepcopy(role)
    bad["rules"][0]["verb"] = ["get"]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_object(bad)
    stream = next(o for _, o in _objects() if o["kind"] == "ImageStream")
    bad = copy.deepcopy(stream)
    bad["spec"]["tags"][0]["referencePolicy"] = {"type": "Remote"}
    with pytest.raises(jsonschema.ValidationError):
        _validate_object(bad)


def test_rbac_grants_only_what_rayspawner_uses() -> None:
    rules: dict[str, set[str]] = {}
    for path, obj in _objects():
        if obj["kind"] != "Role" or "rbac" not in path.parts:
            continue
        for rule in obj["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], f"{path.name}: wildcard in {rule}"
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    rules.setdefault(f"{res}.{group}" if group else res, set()).update(rule["verbs"])
    assert rules == {
        "pods": {"get", "list", "watch", "create", "delete"},
        "events": {"list", "watch"},
        "secrets": {"get", "list", "create", "patch", "delete"},
        "services": {"get", "list", "create", "delete"},
        "deployments.apps": {"get", "list", "create", "delete"},
        "networkpolicies.networking.k8s.io": {"get", "list", "create", "delete"},
        "rayclusters.ray.io": {"get", "list", "watch", "create", "delete"},
    }


# ------------------------------------------------------------------- kubectl
def _kubectl(*args: str, cluster: Any = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    kubectl = cluster.kubectl if cluster else "kubectl"  # the test cluster's own, where there is one
    cmd = [kubectl, *(["--kubeconfig", str(cluster.kubeconfig_path)] if cluster else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=60, cwd=ROOT)


def test_odh_kustomization_builds() -> None:
    r = _kubectl("kustomize", "jupyterhub_config/odh")
    assert r.returncode == 0, r.stderr
    built = [d for d in yaml.safe_load_all(r.stdout) if d]
    kinds = sorted(d["kind"] for d in built)
    assert kinds == ["ConfigMap", "ImageStream", "ImageStream", "Role", "Role", "RoleBinding", "RoleBinding"], kinds
    for obj in built:
        assert obj["metadata"]["namespace"] == "opendatahub"
        _validate_object(obj)
        if obj["kind"] == "RoleBinding":
            assert obj["subjects"] == [{"kind": "ServiceAccount", "name": "jupyterhub-hub", "namespace": "opendatahub"}]
    assert not any(d["kind"] in ("Route", "Ingress") for d in built), "no unauthenticated Route/Ingress by default"


@pytest.mark.parametrize("mode", ["client", "server"])
def test_kubectl_dry_run_parses_every_file(mode: str, kube_factory) -> None:
    """kubectl's own decoding and the real API server's validation (server: full admission and
    strict field validation) of each file. ImageStream is not served there (OpenShift-only): those
    files are checked by the schema above."""
    kube = kube_factory(rbac=[])  # an empty namespace: every object is new there
    checked = 0
    for path in _yaml_files():
        if path.name in NOT_OBJECTS:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        served = [d for d in docs if d["kind"] != "ImageStream"]
        if not served:
            continue
        text = path.read_text() if len(served) == len(docs) else yaml.safe_dump_all(served)
        r = _kubectl("apply", f"--dry-run={mode}", "-n", kube.ns, "-f", "-", cluster=kube.cluster, stdin=text)
        assert r.returncode == 0, f"{path.relative_to(ROOT)}: {r.stderr}"
        assert r.stdout.count("created") == len(served), r.stdout
        checked += 1
    assert checked >= 3
    # and a broken manifest is rejected: no kind, and (server side) an unknown field
    r = _kubectl(
        "apply",
        f"--dry-run={mode}",
        "-n",
        kube.ns,
        "-f",
        "-",
        cluster=kube.cluster,
        stdin="apiVersion: v1\nmetadata: {name: x}\ndata: {a: b}\n",
    )
    assert r.returncode != 0 and "kind" in r.stderr.lower(), r.stderr
    if mode == "server":
        typo = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatta: {a: b}\n"
        r = _kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-n", kube.ns, "-f", "-", cluster=kube.cluster, stdin=typo
        )
        assert r.returncode != 0 and 'unknown field "datta"' in r.stderr, r.stderr
