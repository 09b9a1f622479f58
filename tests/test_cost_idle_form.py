"""The spawn form says what each Ray profile's cluster holds while idle (rayspawner.form,
rayspawner.summary.idle_sentence), read from the rendered form of real spawners:

- local mode and the pods backend: a fixed cluster, head + N workers, until the server stops
  or is culled (KubeRay-only min/max are ignored there, as the spawn ignores them);
- KubeRay with autoscaling: it shrinks to the minimum after ``ray_autoscaler_idle_timeout_seconds``;
  ``auto`` says both;
- the numbers follow the settings a spawn uses (profile and choice overrides, the admin's
  values), one sentence per combination of choices for the browser to show.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path

from rayspawner.local_spawner import LocalRaySpawner

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("example_profiles_idle", ROOT / "jupyterhub_config" / "profiles.py")
profiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profiles)

SIZES = {"ray_head_cpu": "1", "ray_head_memory": "1Gi", "ray_worker_cpu": "1", "ray_worker_memory": "1Gi"}
FIXED = (
    "While idle, this cluster still holds 3 CPU, 3 GiB (head 1 CPU, 1 GiB · 2 workers × 1 CPU, 1 GiB) "
    "until the server stops or is culled."
)
SHRINKS = (
    "While idle, this cluster shrinks: workers idle for 300 s are removed, down to 1 CPU, 1 GiB "
    "(head 1 CPU, 1 GiB · no workers); work brings workers back, up to 4 workers. Everything goes "
    "when the server stops or is culled."
)


class _User:
    name = escaped_name = "alice"
    id = 1
    url = "/user/alice/"


def idle_of(form: str, slug: str) -> tuple[str, dict[str, str]] | None:
    """(text, attributes) of a profile's idle sentence in a rendered form; None if it has none."""
    m = re.search(
        rf'<label for="profile-item-{re.escape(slug)}".*?</label>\s*(?=<label for="profile-item-|</div>)', form, re.S
    )
    assert m, f"no profile {slug} in the form"
    span = re.search(r'<span class="rayspawner-idle"(.*?)>(.*?)</span>', m.group(0), re.S)
    if not span:
        return None
    attrs = {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', span.group(1))}
    return html.unescape(span.group(2)), attrs


def profile(slug: str, **override) -> dict:
    return {"display_name": slug, "slug": slug, "kubespawner_override": {"ray_enabled": True, **SIZES, **override}}


AUTOSCALING = {
    "ray_worker_replicas": 1,
    "ray_worker_min_replicas": 0,
    "ray_worker_max_replicas": 4,
    "ray_autoscaler_idle_timeout_seconds": 300,
}


# ------------------------------------------------------------------ Kubernetes
async def test_pods_fixed_and_kuberay_autoscaling_say_what_an_idle_cluster_holds(kube, ray_spawner_factory) -> None:
    plist = [
        {"display_name": "Plain", "slug": "plain", "default": True, "description": "No Ray."},
        {**profile("fixed", ray_backend="pods", ray_worker_replicas=2), "description": "Two <b>workers</b>."},
        profile("auto-kuberay", ray_backend="kuberay", **AUTOSCALING),
        profile("auto-pods", ray_backend="pods", **AUTOSCALING),  # pods: min/max ignored, 1 worker
        profile("auto-either", ray_backend="auto", **AUTOSCALING),
        profile("fixed-kuberay", ray_backend="kuberay", ray_worker_replicas=2),  # KubeRay, min = max
    ]
    form = ray_spawner_factory(kube, profile_list=plist, **profiles.LIMITS).options_form
    assert idle_of(form, "plain") is None and "<p>No Ray.</p>" in form
    # next to the admin's own description, which stays as written
    assert '<p>Two <b>workers</b>.<br><span class="rayspawner-idle"' in form
    assert idle_of(form, "fixed")[0] == FIXED
    assert idle_of(form, "fixed-kuberay")[0] == FIXED
    assert idle_of(form, "auto-kuberay")[0] == SHRINKS
    one_worker = FIXED.replace("3 CPU, 3 GiB", "2 CPU, 2 GiB").replace("2 workers", "1 worker")
    assert idle_of(form, "auto-pods")[0] == one_worker
    either = idle_of(form, "auto-either")[0]
    assert either.startswith("On KubeRay, while idle, this cluster shrinks: workers idle for 300 s"), either
    assert either.endswith("Without KubeRay (plain pods), " + one_worker[0].lower() + one_worker[1:]), either


async def test_the_numbers_follow_the_settings_the_spawn_uses(kube, ray_spawner_factory) -> None:
    plist = [profile("p", ray_backend="kuberay", **{**AUTOSCALING, "ray_worker_min_replicas": 1})]
    # the profile's value wins over the admin's; without it, the admin's counts
    form = ray_spawner_factory(
        kube, profile_list=plist, ray_autoscaler_idle_timeout_seconds=45, **profiles.LIMITS
    ).options_form
    text = idle_of(form, "p")[0]
    assert "idle for 300 s" in text and "down to 2 CPU, 2 GiB (head 1 CPU, 1 GiB · 1 worker × 1 CPU, 1 GiB)" in text
    plist[0]["kubespawner_override"].pop("ray_autoscaler_idle_timeout_seconds")
    form = ray_spawner_factory(
        kube, profile_list=plist, ray_autoscaler_idle_timeout_seconds=45, **profiles.LIMITS
    ).options_form
    assert "idle for 45 s" in idle_of(form, "p")[0]
    # a profile the spawn would refuse (over the admin's worker limit) gets no sentence
    plist[0]["kubespawner_override"]["ray_worker_max_replicas"] = 9
    assert idle_of(ray_spawner_factory(kube, profile_list=plist, **profiles.LIMITS).options_form, "p") is None


# ------------------------------------------------------------------ local mode
def local_form(plist: list[dict], **kw) -> str:
    s = LocalRaySpawner(profile_list=plist, local_gpus=0, **{**profiles.LIMITS, **kw})
    s.user = _User()
    return s.options_form


def test_local_mode_keeps_everything_and_each_choice_has_its_sentence() -> None:
    form = local_form(profiles.visible_profiles(local=True))
    text, attrs = idle_of(form, "ray")
    # the demo's default choices: 1 small worker; local clusters never autoscale
    assert text == (
        "While idle, this cluster still holds 2 CPU, 2 GiB (head 1 CPU, 1 GiB · 1 worker × 1 CPU, 1 GiB) "
        "until the server stops or is culled."
    )
    # what the script shows for each combination of the selects (JSON.stringify of their values)
    assert json.loads(attrs["data-options"]) == ["workers", "worker_size"] and attrs["data-slug"] == "ray"
    texts = json.loads(attrs["data-idle"])
    assert len(texts) == 6 and texts['["1","small"]'] == text
    assert "5 CPU, 5 GiB (head 1 CPU, 1 GiB · 2 workers × 2 CPU, 2 GiB)" in texts['["2","medium"]']
    assert "1 CPU, 1 GiB (head 1 CPU, 1 GiB · no workers)" in texts['["0","small"]']
    assert attrs["data-hint"].startswith("While idle, it keeps its head and all of its workers")
    gpu = idle_of(form, "ray-gpu")[0]
    assert "3 CPU, 6 GiB, 1 GPU (head 1 CPU, 2 GiB · 1 GPU worker × 2 CPU, 4 GiB, 1 GPU)" in gpu, gpu
    assert idle_of(form, "plain") is None
    assert "$('.rayspawner-idle')" in form  # the script that follows the selects


def test_local_mode_ignores_kuberay_autoscaling_settings() -> None:
    # LocalRaySpawner starts ray_worker_replicas workers whatever min/max say
    form = local_form([profile("p", ray_backend="kuberay", **AUTOSCALING)])
    assert idle_of(form, "p")[0] == FIXED.replace("3 CPU, 3 GiB", "2 CPU, 2 GiB").replace("2 workers", "1 worker")


def test_a_free_entry_only_size_gets_the_words_without_numbers() -> None:
    plist = [
        {
            **profile("p"),
            "profile_options": {
                "workers": {
                    "display_name": "Workers",
                    "choices": {},  # KubeSpawner's template needs the key
                    "unlisted_choice": {
                        "enabled": True,
                        "display_name": "Workers",
                        "kubespawner_override": {"ray_worker_replicas": "{value}"},
                    },
                }
            },
        }
    ]
    text, attrs = idle_of(local_form(plist), "p")
    assert text == "While idle, it keeps its head and all of its workers until the server stops or is culled."
    assert "data-idle" not in attrs
