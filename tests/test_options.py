"""Validation of user options against admin limits, without any cluster.

Applies profiles the way KubeSpawner does (overrides, then option choices or
formatted unlisted values) to a plain RayConfig, then resolves the spec.
"""

from __future__ import annotations

import copy

import pytest
from kubespawner.utils import recursive_format

from rayspawner.config import RayConfig
from rayspawner.errors import ConfigError, InvalidOptions
from rayspawner.options import check_user_options, resolve_spec
from rayspawner.quantities import parse_cpu, parse_memory

from .bad_inputs import BAD_INPUTS, LIMITS, PROFILES

NOTEBOOK_IMAGE = "quay.io/rayspawner/notebook:2.60.0"


def initialized(profiles: list[dict]) -> list[dict]:
    out = copy.deepcopy(profiles)
    for p in out:
        for opt in p.get("profile_options", {}).values():
            if opt.get("choices") and not any(c.get("default") for c in opt["choices"].values()):
                next(iter(opt["choices"].values()))["default"] = True
            opt.setdefault("unlisted_choice", {}).setdefault("enabled", False)
    return out


def apply_profile(cfg: RayConfig, user_options: dict, profiles: list[dict]) -> None:
    """KubeSpawner's _load_profile, restricted to the ray_* traits."""
    slug = user_options.get("profile")
    profile = next(p for p in profiles if (p["slug"] == slug if slug else p.get("default")))
    for k, v in profile.get("kubespawner_override", {}).items():
        setattr(cfg, k, v)
    for name, opt in profile.get("profile_options", {}).items():
        unlisted = user_options.get(f"{name}--unlisted-choice")
        if unlisted:
            overrides = {
                k: recursive_format(v, value=unlisted)
                for k, v in opt["unlisted_choice"]["kubespawner_override"].items()
            }
        elif user_options.get(name):
            overrides = opt["choices"][user_options[name]].get("kubespawner_override", {})
        else:
            overrides = next(c for c in opt["choices"].values() if c.get("default")).get("kubespawner_override", {})
        for k, v in overrides.items():
            setattr(cfg, k, v)


def spec_for(user_options: dict, profiles: list[dict] | None = None, **config):
    profiles = initialized(profiles or PROFILES)
    check_user_options(user_options, profiles)
    cfg = RayConfig(**{**LIMITS, **config})
    apply_profile(cfg, user_options, profiles)
    if not cfg.ray_enabled:
        return None
    return resolve_spec(cfg, username="alice", servername="", namespace="jhub", notebook_image=NOTEBOOK_IMAGE)


@pytest.mark.parametrize("case,user_options,fragment", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_refused_with_message(case, user_options, fragment):
    with pytest.raises(InvalidOptions) as err:
        spec_for(user_options)
    assert fragment in err.value.message, err.value.message
    assert err.value.status_code == 400


def test_catalogue_is_large_and_distinct():
    assert len(BAD_INPUTS) >= 30
    assert len({b[0] for b in BAD_INPUTS}) == len(BAD_INPUTS)


def test_good_options_map_to_spec():
    spec = spec_for({"profile": "ray", "workers": "2"})
    assert spec.worker_groups[0].replicas == 2
    assert spec.image == NOTEBOOK_IMAGE  # defaults to the notebook image
    spec = spec_for(
        {
            "profile": "ray",
            "workers--unlisted-choice": "3",
            "size--unlisted-choice": "4Gi",
            "cpu--unlisted-choice": "1500m",
        }
    )
    w = spec.worker_groups[0]
    assert (w.replicas, w.resources.memory_bytes, w.resources.cpu_millis) == (3, 4 * 2**30, 1500)
    spec = spec_for(
        {"profile": "ray", "gpus--unlisted-choice": "1", "image--unlisted-choice": "quay.io/rayspawner/ray:2.60.0"}
    )
    assert [g.name for g in spec.worker_groups] == ["workers", "gpu-workers"]
    assert spec.worker_groups[1].resources.gpu == 1
    assert spec.image == "quay.io/rayspawner/ray:2.60.0"
    assert spec_for({"profile": "plain"}) is None
    assert spec_for({}) is None  # default profile is plain


def test_autoscaling_bounds():
    spec = spec_for({"profile": "ray"}, ray_worker_min_replicas=0, ray_worker_max_replicas=3)
    assert spec.autoscaling and spec.worker_groups[0].max_replicas == 3
    with pytest.raises(InvalidOptions, match="minimum ≤ workers ≤ maximum"):
        spec_for({"profile": "ray"}, ray_worker_min_replicas=2, ray_worker_max_replicas=3)
    with pytest.raises(InvalidOptions, match="limit is 4"):
        spec_for({"profile": "ray"}, ray_worker_max_replicas=6)


@pytest.mark.parametrize(
    "config,fragment",
    [
        ({"ray_max_worker_memory": "lots"}, "Invalid admin limit"),
        ({"ray_max_total_cpu": "-3"}, "Invalid admin limit"),
        (
            {"ray_allowed_images_regex": "([", "ray_allowed_images": [], "ray_image": "quay.io/rayspawner/x"},
            "not a valid regular expression",
        ),
        ({"ray_object_store_fraction": 0.99}, "ray_object_store_fraction"),
        ({"ray_cluster_name_template": "ray-{nope}"}, "ray_cluster_name_template"),
    ],
)
def test_config_errors_are_admin_errors(config, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        spec_for({"profile": "ray-fixed"}, **config)


def test_regex_allowlist():
    regex = r"quay\.io/rayspawner/ray:[0-9.]+"
    spec = spec_for(
        {"profile": "ray-fixed"},
        ray_image="quay.io/rayspawner/ray:2.60.0",
        ray_allowed_images=[],
        ray_allowed_images_regex=regex,
    )
    assert spec.image.endswith(":2.60.0")
    with pytest.raises(InvalidOptions, match="must match"):
        spec_for(
            {"profile": "ray-fixed"},
            ray_image="quay.io/rayspawner/ray:latest",
            ray_allowed_images=[],
            ray_allowed_images_regex=regex,
        )


@pytest.mark.parametrize("text,expected", [("500m", 500), ("2", 2000), ("1.5", 1500), (2, 2000), (0.25, 250)])
def test_parse_cpu(text, expected):
    assert parse_cpu(text) == expected


@pytest.mark.parametrize(
    "text,expected", [("2Gi", 2 * 2**30), ("512Mi", 512 * 2**20), ("2G", 2 * 10**9), (1024, 1024), ("1.5Gi", 3 * 2**29)]
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


def test_limits_apply_to_profile_overrides_too():
    """An admin profile that exceeds the admin limits is refused as well (limits win)."""
    greedy = copy.deepcopy(PROFILES)
    greedy[2]["kubespawner_override"]["ray_worker_memory"] = "20Gi"
    with pytest.raises(InvalidOptions, match="over the limit of 16Gi per node"):
        spec_for({"profile": "ray-fixed"}, greedy)


def test_version_comparison_messages():
    from rayspawner.versions_check import compare_versions

    same = {"ray": "2.60.0", "python": "3.11"}
    assert compare_versions(same, dict(same), "nb:1", "ray:1") is None
    msg = compare_versions(same, {"ray": "2.50.0", "python": "3.12"}, "nb:1", "ray:1")
    assert "Ray 2.60.0 in the notebook but Ray 2.50.0 in the cluster" in msg
    assert "Python 3.11 in the notebook but Python 3.12 in the cluster" in msg and "ray_image" in msg
    assert "Ray Client" in msg and "would not help" in msg  # the fallback mode is no way out
    assert "has no Ray installed" in compare_versions({"ray": None, "python": "3.11"}, same, "nb:1", "ray:1")
