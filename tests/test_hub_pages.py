"""The hub's pages without a hub: the spawn form's limits and kept choices, the home
page's Ray cluster summary (rayspawner.form, rayspawner.summary, rayspawner/templates)."""

from __future__ import annotations

import logging
import copy
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, PrefixLoader

import rayspawner
from rayspawner.session import RayClusterSession
from rayspawner.form import count_regex, field_limit, with_limits
from rayspawner.local_spawner import LocalRaySpawner
from rayspawner.options import resolve_spec
from rayspawner.config import RayConfig
from rayspawner.summary import cluster_summary, describe, local_size, spec_size

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("example_profiles_pages", ROOT / "jupyterhub_config" / "profiles.py")
profiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profiles)


class _User:
    name = escaped_name = "alice"
    id = 1
    url = "/user/alice/"

    def server_url(self, name: str = "") -> str:
        return self.url + (f"{name}/" if name else "")


def local_spawner(**kw) -> LocalRaySpawner:
    s = LocalRaySpawner(**{"profile_list": profiles.visible_profiles(), "local_gpus": 0, **profiles.LIMITS, **kw})
    s.user = _User()
    return s


def unlisted_input(form: str, slug: str = "ray", option: str = "workers") -> tuple[str, dict[str, str]]:
    """(label text, attributes) of a free-entry field in a rendered form."""
    field = f"profile-option-{slug}--{option}--unlisted-choice"
    m = re.search(rf'<label for="{field}">\s*(.*?)\s*</label>\s*<input(.*?)/>', form, re.S)
    assert m, f"no free-entry field {field}"
    return m.group(1), dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(2)))


def html_pattern_matches(pattern: str, value: str) -> bool:
    # what the browser does with pattern="…": the whole value must match
    return re.fullmatch(f"(?:{pattern})", value) is not None


# ------------------------------------------------------------------ limits
def test_free_entry_field_shows_the_admins_limit() -> None:
    label, attrs = unlisted_input(local_spawner().options_form)
    assert label == "Number of workers (0–4)"
    assert attrs["title"] == "A whole number of workers. Allowed: 0 to 4 (the admin's limit)."
    for ok in ("0", "3", "4"):
        assert html_pattern_matches(attrs["pattern"], ok), ok
    for bad in ("5", "12", "-1", "a", "", "3.5", " 3"):
        assert not html_pattern_matches(attrs["pattern"], bad), bad


def test_the_range_follows_the_configured_limit_not_a_hard_coded_text() -> None:
    label, attrs = unlisted_input(local_spawner(ray_max_workers=7).options_form)
    assert label.endswith("(0–7)") and "0 to 7" in attrs["title"]
    assert html_pattern_matches(attrs["pattern"], "7") and not html_pattern_matches(attrs["pattern"], "8")
    # the admin's own regex still holds too (here: one digit)
    label, attrs = unlisted_input(local_spawner(ray_max_workers=20).options_form)
    assert label.endswith("(0–20)")
    assert html_pattern_matches(attrs["pattern"], "9") and not html_pattern_matches(attrs["pattern"], "12")


def test_a_profiles_own_limit_override_counts_for_its_fields() -> None:
    plist = profiles.visible_profiles()
    plist[1]["kubespawner_override"]["ray_max_workers"] = 2
    label, _ = unlisted_input(local_spawner(profile_list=plist).options_form)
    assert label.endswith("(0–2)")
    _, other = unlisted_input(local_spawner(profile_list=plist).options_form, slug="ray-large")
    assert "0 to 4" in other["title"]


def test_only_fields_that_set_exactly_one_limited_trait_are_annotated() -> None:
    cfg = RayConfig(**profiles.LIMITS)
    base = {"enabled": True, "display_name": "Other", "validation_regex": "^.*$", "validation_message": "m"}
    plist = [
        {
            "slug": "p",
            "profile_options": {
                "cpu": {"unlisted_choice": {**base, "kubespawner_override": {"ray_worker_cpu": "{value}"}}},
                "mem": {"unlisted_choice": {**base, "kubespawner_override": {"ray_head_memory": "{value}"}}},
                "gib": {"unlisted_choice": {**base, "kubespawner_override": {"ray_worker_memory": "{value}Gi"}}},
                "image": {"unlisted_choice": {**base, "kubespawner_override": {"image": "{value}"}}},
                "two": {
                    "unlisted_choice": {
                        **base,
                        "kubespawner_override": {"ray_worker_replicas": "{value}", "ray_worker_cpu": "{value}"},
                    }
                },
            },
        }
    ]
    opts = with_limits(copy.deepcopy(plist), cfg)[0]["profile_options"]
    assert opts["cpu"]["unlisted_choice"]["display_name"] == "Other (up to 4 CPU)"
    assert opts["cpu"]["unlisted_choice"]["validation_regex"] == "^.*$"  # quantities: the server checks
    assert opts["mem"]["unlisted_choice"]["display_name"] == "Other (512Mi–8Gi)"
    assert "512Mi to 8Gi" in opts["mem"]["unlisted_choice"]["validation_message"]
    for untouched in ("gib", "image", "two"):
        assert opts[untouched]["unlisted_choice"] == plist[0]["profile_options"][untouched]["unlisted_choice"]


def test_ranges_and_regexes() -> None:
    assert count_regex(1, 3) == "(?:1|2|3)"
    big = count_regex(0, 5000)
    assert re.fullmatch(big, "4999") and not re.fullmatch(big, "012")
    assert field_limit("ray_gpu_worker_gpus", 0).label == "none allowed"
    assert not re.fullmatch(field_limit("ray_gpu_worker_gpus", 0).regex, "0")
    assert field_limit("ray_worker_cpu", "lots") is None  # a broken limit leaves the form alone


# ----------------------------------------------------------- kept choices
def test_the_form_preselects_the_last_requested_options() -> None:
    s = local_spawner()
    first = s.options_form
    assert "const userOptions = {};" in first
    # what JupyterHub does for a spawn request; refused or not, the form shows it next
    s.user_options = {"profile": "ray", "workers--unlisted-choice": "9", "worker_size": "medium"}
    form = s.options_form
    assert json.loads(re.search(r"const userOptions = (.*);", form).group(1)) == s.user_options
    assert re.search(r'value="ray"\s*checked', form) and not re.search(r'value="plain"\s*checked', form)
    # options that no longer fit the profile list are not preselected
    s.user_options = {"profile": "gone"}
    assert "const userOptions = {};" in s.options_form


def test_an_admins_literal_options_form_is_left_alone() -> None:
    s = local_spawner(options_form="<p>admin's own form</p>")
    s.user_options = {"profile": "ray"}
    assert s.options_form == "<p>admin's own form</p>"


async def test_a_callable_profile_list_renders_with_limits_and_choices() -> None:
    s = local_spawner(profile_list=lambda spawner: profiles.visible_profiles())
    s.user_options = {"profile": "ray", "workers": "2"}
    form = await s.get_options_form()
    assert "(0–4)" in form and '"workers": "2"' in form


async def test_the_kubernetes_spawner_renders_the_same_form(kube, ray_spawner_factory) -> None:
    s = ray_spawner_factory(kube, profile_list=profiles.visible_profiles(), **profiles.LIMITS)
    label, attrs = unlisted_input(s.options_form)
    assert label == "Number of workers (0–4)" and "0 to 4" in attrs["title"]
    s.user_options = {"profile": "ray-large", "workers": "3"}
    assert re.search(r'value="ray-large"\s*checked', s.options_form)


# ---------------------------------------------------------------- summary
def _spec(**traits):
    cfg = RayConfig(
        **{
            **profiles.LIMITS,
            "ray_head_cpu": "1",
            "ray_head_memory": "1Gi",
            "ray_worker_cpu": "1",
            "ray_worker_memory": "1Gi",
            **traits,
        }
    )
    return resolve_spec(cfg, username="alice", servername="", namespace="jhub", notebook_image="nb:1")


def test_describe_a_cluster() -> None:
    assert describe(spec_size(_spec(ray_worker_replicas=2))) == "head 1 CPU, 1 GiB · 2 workers × 1 CPU, 1 GiB"
    assert describe(spec_size(_spec(ray_worker_replicas=0))) == "head 1 CPU, 1 GiB · no workers"
    assert (
        describe(spec_size(_spec(ray_worker_replicas=1, ray_worker_min_replicas=1, ray_worker_max_replicas=3)))
        == "head 1 CPU, 1 GiB · 1–3 workers × 1 CPU, 1 GiB"
    )
    gpu = spec_size(_spec(ray_worker_replicas=0, ray_gpu_worker_replicas=1, ray_gpu_worker_gpus=1))
    assert describe(gpu) == "head 1 CPU, 1 GiB · 1 GPU worker × 1 CPU, 1 GiB, 1 GPU"


def test_local_cluster_size_from_restored_nodes() -> None:
    node = lambda role, cpus: SimpleNamespace(
        role=role,
        num_cpus=cpus,
        num_gpus=0,  # noqa: E731
        memory_bytes=700 * 2**20,
        object_store_bytes=324 * 2**20,
    )
    cluster = SimpleNamespace(name="ray-alice", nodes=[node("head", 1), node("workers-0", 2), node("workers-1", 2)])
    size = local_size(cluster)
    assert size["cluster"] == "ray-alice"
    assert describe(size) == "head 1 CPU, 1 GiB · 2 workers × 2 CPU, 1 GiB"


def _fake_spawner(name="", active=True, ready=True, pending=None, spec=None, size=None):
    session = RayClusterSession(logging.getLogger(__name__), lambda: name, None)
    session.spec, session.stored_size = spec, size
    return SimpleNamespace(
        name=name, display_name=name, active=active, ready=ready, pending=pending, user=_User(), ray_session=session
    )


def test_cluster_summary_of_a_spawner() -> None:
    assert cluster_summary(_fake_spawner(spec=None)) is None  # no Ray cluster
    assert cluster_summary(_fake_spawner(active=False, spec=_spec())) is None  # stopped
    s = cluster_summary(_fake_spawner(spec=_spec(ray_worker_replicas=2)))
    assert s["cluster"] == "ray-alice" and s["server_label"] == "Default server" and s["ready"]
    assert s["dashboard_url"] == "/user/alice/ray-dashboard/"
    named = cluster_summary(_fake_spawner(name="big", size=spec_size(_spec())))
    assert named["dashboard_url"] == "/user/alice/big/ray-dashboard/" and named["server_label"] == "big"


async def test_kubernetes_spawner_keeps_the_size_in_its_state(kube, ray_spawner_factory) -> None:
    from rayspawner.spec import ClusterRef

    first = ray_spawner_factory(kube)
    first.ray_session.spec = _spec(ray_worker_replicas=2)
    first.ray_session.ref = ClusterRef("ray-alice", "jhub", "pods")
    state = first.get_state()
    assert state["ray_size"] == spec_size(first.ray_session.spec)
    second = ray_spawner_factory(kube)
    second.load_state(state)  # a restarted hub
    assert second.get_state() == state
    assert "2 workers" in cluster_summary(_fake_spawner(size=second.ray_session.stored_size))["text"]
    second.clear_state()
    assert "ray_size" not in second.get_state()


# ---------------------------------------------------------------- home page
def _render_home(spawners: list) -> str:
    base = (
        "{% block main %}<main>JupyterHub's home</main>{% endblock %}"
        "{% block script %}<script>/* home.js */</script>{% endblock %}"
    )
    env = Environment(
        autoescape=True,
        loader=ChoiceLoader(
            [
                PrefixLoader({"templates": DictLoader({"home.html": base})}, "/"),
                FileSystemLoader([rayspawner.templates_path()]),
            ]
        ),
    )
    user = SimpleNamespace(all_spawners=lambda include_default=True: iter(spawners))
    return env.get_template("home.html").render(user=user)


class _Spawner:
    def __init__(self, summary):
        self._summary = summary

    def ray_summary(self):
        return self._summary


def test_home_page_lists_each_ray_cluster_with_its_dashboard() -> None:
    ready = cluster_summary(_fake_spawner(spec=_spec(ray_worker_replicas=2)))
    starting = cluster_summary(_fake_spawner(name="big", ready=False, pending="spawn", size=spec_size(_spec())))
    orm_only = SimpleNamespace(name="old")  # a stopped server: JupyterHub's ORM object, no ray_summary
    html = _render_home([_Spawner(ready), _Spawner(starting), _Spawner(None), orm_only])
    assert "JupyterHub's home" in html and "/* home.js */" in html
    rows = re.findall(r'<tr class="ray-cluster-row" data-server-name="([^"]*)">(.*?)</tr>', html, re.S)
    assert [r[0] for r in rows] == ["", "big"]
    assert "2 workers × 1 CPU, 1 GiB" in rows[0][1]
    assert 'href="/user/alice/ray-dashboard/"' in rows[0][1]
    assert "ray-dashboard" not in rows[1][1] and "starting" in rows[1][1]
    data = json.loads(re.search(r'id="ray-clusters-data" type="application/json">(.*?)</script>', html).group(1))
    assert data == {"": "ray-alice", "big": "ray-alice"}
    assert "window.confirm" in html and "will be deleted" in html


def test_home_page_without_ray_clusters_is_jupyterhubs() -> None:
    html = _render_home([_Spawner(None)])
    assert 'id="ray-clusters"' not in html and "JupyterHub's home" in html


def test_templates_ship_in_the_package() -> None:
    assert (Path(rayspawner.templates_path()) / "home.html").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "templates/*.html" in package_data["rayspawner"]


def test_the_kubernetes_example_configs_enable_the_home_page() -> None:
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("kubernetes.py", str(ROOT / "jupyterhub_config")).load_config()
    assert list(config.JupyterHub.template_paths) == [rayspawner.templates_path()]
    line = "c.JupyterHub.template_paths = [rayspawner.templates_path()]"
    for path in ("z2jh/values.yaml", "odh/profiles-configmap.yaml", "local.py"):
        assert line in (ROOT / "jupyterhub_config" / path).read_text(), path
