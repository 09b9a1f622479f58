"""The spawn form: KubeSpawner's profile form, with the admin's limits shown and the
user's last choices kept.

- **Limits in the form.** A free-entry field (a profile option's ``unlisted_choice``)
  whose ``kubespawner_override`` sets a ``ray_*`` trait to exactly ``"{value}"`` gets the
  allowed range from the admin's ``ray_max_*`` limit: appended to its label
  (``display_name``) and to its ``validation_message`` (the browser's whole message for
  a value that does not match), and, for whole numbers, folded into the field's
  ``validation_regex`` so the browser refuses 12 when the limit is 4. Only the rendered
  copy changes: the server still checks the admin's own regex and then every limit on
  the final values (:func:`rayspawner.options.resolve_spec`), with its own message.
- **What the cluster holds while idle.** Each Ray profile's description gets a sentence
  (:func:`rayspawner.summary.idle_sentence`) computed with :func:`rayspawner.options.resolve_spec`
  from the same settings a spawn of that profile would use (the admin's ``ray_*`` values,
  the profile's and the chosen options' ``kubespawner_override``): a fixed cluster keeps
  its head and all workers until the server stops or is culled; with KubeRay autoscaling
  it shrinks to the minimum after ``ray_autoscaler_idle_timeout_seconds``. The sentence is
  computed for every combination of listed choices (up to 64) and follows the user's
  selection in the browser; a free-entry value gets the same words without numbers.
- **Choices kept.** The form is rendered again whenever the spawner's ``user_options``
  change, and preselects them. After a refused spawn JupyterHub shows the form again with
  the error at the top; KubeSpawner's template then preselects the refused profile and
  choices (its own renders once and would fall back to the default profile).
"""

from __future__ import annotations

import html
import itertools
import json
import logging
from dataclasses import dataclass
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader
from kubespawner import KubeSpawner
from traitlets import TraitError

from .config import RayConfig
from .errors import ConfigError, InvalidOptions
from .options import resolve_spec
from .quantities import format_cpu, format_memory, parse_cpu, parse_memory
from .spec import RayClusterSpec
from .summary import idle_hint, idle_sentence, shrinks_when_idle

log = logging.getLogger(__name__)

#: trait a free-entry field may set → (lowest allowed value, the limit trait); whole numbers
COUNT_LIMITS: dict[str, tuple[int, str]] = {
    "ray_worker_replicas": (0, "ray_max_workers"),
    "ray_worker_min_replicas": (0, "ray_max_workers"),
    "ray_worker_max_replicas": (0, "ray_max_workers"),
    "ray_gpu_worker_replicas": (0, "ray_max_workers"),
    "ray_head_gpu": (0, "ray_max_worker_gpu"),
    "ray_gpu_worker_gpus": (1, "ray_max_worker_gpu"),
}
CPU_LIMITS = {"ray_head_cpu": "ray_max_worker_cpu", "ray_worker_cpu": "ray_max_worker_cpu"}
MEMORY_LIMITS = {"ray_head_memory": "ray_max_worker_memory", "ray_worker_memory": "ray_max_worker_memory"}
#: Ray refuses smaller nodes (rayspawner.options._check_node says so too)
MIN_NODE_MEMORY = 512 * 2**20
#: above this many values a whole-number range is left to the server (the regex would be long)
_MAX_ENUMERATED = 1000
#: the settings a profile override can change that decide a cluster's size and backend
RAY_TRAITS = frozenset(RayConfig.class_trait_names(config=True))
#: above this many combinations of listed choices, the idle sentence has no numbers
_MAX_COMBINATIONS = 64


@dataclass(frozen=True)
class FieldLimit:
    """What a free-entry field may hold, in words and (for whole numbers) as a regex."""

    label: str  # "0–4": appended to the field's label in parentheses
    sentence: str  # "0 to 4": completes "Allowed: … (the admin's limit)."
    regex: str | None = None  # the allowed values, unanchored (HTML adds ^(?: … )$)


def count_regex(lo: int, hi: int) -> str:
    """A regex matching exactly the decimal numbers ``lo``..``hi`` (no sign, no leading zeros)."""
    if hi < lo:
        return "(?!)"
    if hi - lo < _MAX_ENUMERATED:
        return "(?:" + "|".join(str(n) for n in range(lo, hi + 1)) + ")"
    return f"(?:0|[1-9][0-9]{{0,{len(str(hi)) - 1}}})"


def field_limit(trait: str, limit: Any) -> FieldLimit | None:
    """The range a field that sets ``trait`` may take, given the value of its limit trait."""
    try:
        if trait in COUNT_LIMITS:
            lo, hi = COUNT_LIMITS[trait][0], int(limit)
            if hi < lo:
                return FieldLimit("none allowed", f"none (the limit is {hi})", "(?!)")
            return FieldLimit(f"{lo}–{hi}", f"{lo} to {hi}", count_regex(lo, hi))
        if trait in CPU_LIMITS:
            hi = format_cpu(parse_cpu(limit, CPU_LIMITS[trait]))
            return FieldLimit(f"up to {hi} CPU", f"up to {hi} CPU, e.g. 1 or 500m")
        if trait in MEMORY_LIMITS:
            hi = format_memory(parse_memory(limit, MEMORY_LIMITS[trait]))
            lo = format_memory(MIN_NODE_MEMORY)
            return FieldLimit(f"{lo}–{hi}", f"{lo} to {hi}, e.g. 2Gi")
    except (InvalidOptions, TypeError, ValueError):
        return None  # a broken limit is the admin's error, reported at spawn; the form stays usable
    return None


def _limit_trait(trait: str) -> str | None:
    if trait in COUNT_LIMITS:
        return COUNT_LIMITS[trait][1]
    return CPU_LIMITS.get(trait) or MEMORY_LIMITS.get(trait)


def _configured(spawner: Any, trait: str) -> Any:
    # a spawner that applied a profile keeps the overridden values until its next spawn;
    # the form must show the admin's configured limit, not a previous profile's
    originals = getattr(spawner, "_profile_originals", None) or {}
    return originals[trait] if trait in originals else getattr(spawner, trait)


def with_limits(profile_list: list[dict], spawner: Any) -> list[dict]:
    """Annotate free-entry fields with their allowed range (in place; pass a copy).

    ``profile_list`` must be initialized (KubeSpawner's ``_get_initialized_profile_list``,
    which deep-copies). A profile's own ``kubespawner_override`` of a limit trait counts
    for that profile's fields.
    """
    for profile in profile_list:
        profile_overrides = profile.get("kubespawner_override") or {}
        for option in (profile.get("profile_options") or {}).values():
            unlisted = option.get("unlisted_choice") or {}
            if not unlisted.get("enabled"):
                continue
            limits = []
            for trait, value in (unlisted.get("kubespawner_override") or {}).items():
                limit_trait = _limit_trait(trait)
                if value != "{value}" or limit_trait is None:
                    continue
                if limit_trait in profile_overrides and not callable(profile_overrides[limit_trait]):
                    limit = profile_overrides[limit_trait]
                else:
                    limit = _configured(spawner, limit_trait)
                found = field_limit(trait, limit)
                if found:
                    limits.append(found)
            if len(limits) != 1:
                continue  # one field setting several limited traits: left to the server's messages
            _annotate(unlisted, limits[0])
    return profile_list


def _annotate(unlisted: dict, limit: FieldLimit) -> None:
    label = unlisted.get("display_name") or "Other"
    unlisted["display_name"] = f"{label} ({limit.label})"
    message = (unlisted.get("validation_message") or "").strip()
    allowed = f"Allowed: {limit.sentence} (the admin's limit)."
    unlisted["validation_message"] = f"{message} {allowed}" if message else allowed
    if limit.regex:
        admin = unlisted.get("validation_regex")
        # both must hold: the admin's own pattern (checked on the server too) and the range
        unlisted["validation_regex"] = f"(?=(?:{admin}))(?:{limit.regex})" if admin else limit.regex


# ------------------------------------------------------------------ what a cluster holds while idle
def _profile_spec(spawner: Any, overrides: list[dict | None]) -> tuple[RayClusterSpec, str] | None:
    """The spec a spawn with these overrides (profile, then chosen options) would get, and its
    backend; None for no Ray cluster, or settings the spawn itself would refuse (it says why)."""
    values = {name: _configured(spawner, name) for name in RAY_TRAITS}
    image = _configured(spawner, "image") if isinstance(spawner, KubeSpawner) else "local"
    for override in overrides:
        for key, value in (override or {}).items():
            if key not in RAY_TRAITS and key != "image":
                continue
            if callable(value):
                return None  # decided at spawn time (KubeSpawner calls it with the spawner)
            if key == "image":
                image = value
            else:
                values[key] = value
    user = getattr(spawner, "user", None)
    try:
        cfg = RayConfig(**values)
        if not cfg.ray_enabled:
            return None
        spec = resolve_spec(
            cfg,
            username=getattr(user, "name", "") or "user",
            servername=getattr(spawner, "name", "") or "",
            namespace=getattr(spawner, "namespace", "") or "local",
            notebook_image=image,
        )
    except (InvalidOptions, ConfigError, TraitError, ValueError, TypeError) as e:
        log.debug("Spawn form: no idle sentence for overrides %s: %s", overrides, e)
        return None
    # LocalRaySpawner ignores ray_backend: its clusters are local processes of a fixed size
    return spec, (cfg.ray_backend if isinstance(spawner, KubeSpawner) else "local")


def _choice_key(values: tuple[str, ...]) -> str:
    # what the browser's JSON.stringify makes of the selects' values (the script below)
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def with_idle_text(profile_list: list[dict], spawner: Any) -> list[dict]:
    """Add to each Ray profile's description what its cluster holds while idle (in place;
    ``profile_list`` initialized: every option with choices has a default one)."""
    for profile in profile_list:
        options = profile.get("profile_options") or {}
        listed = {k: o for k, o in options.items() if o.get("choices")}
        keys = list(listed)
        default = tuple(
            next((c for c, v in o["choices"].items() if v.get("default")), next(iter(o["choices"])))
            for o in listed.values()
        )
        combos = list(
            itertools.islice(itertools.product(*(list(o["choices"]) for o in listed.values())), _MAX_COMBINATIONS + 1)
        )
        too_many = len(combos) > _MAX_COMBINATIONS
        if too_many:
            combos = [default]
        texts: dict[str, str] = {}
        shrinks = None
        for combo in combos:
            overrides = [profile.get("kubespawner_override")]
            overrides += [listed[k]["choices"][c].get("kubespawner_override") for k, c in zip(keys, combo)]
            found = _profile_spec(spawner, overrides)
            texts[_choice_key(combo)] = idle_sentence(*found) if found else ""
            if found and combo == default:
                shrinks = shrinks_when_idle(*found)
        if not any(texts.values()):
            continue  # no Ray cluster in this profile (or none the spawn would accept)
        hint = idle_hint(bool(shrinks))
        # an option with a free-entry field only: its size is typed, not chosen
        free_only = any(
            not o.get("choices") and (o.get("unlisted_choice") or {}).get("enabled") for o in options.values()
        )
        text = hint if free_only or too_many else texts.get(_choice_key(default), "")
        attrs = {
            "class": "rayspawner-idle",
            "data-slug": profile.get("slug", ""),
            "data-options": json.dumps(keys, ensure_ascii=False),
            "data-hint": hint,
        }
        if len(texts) > 1 and not too_many:
            attrs["data-idle"] = json.dumps(texts, ensure_ascii=False)
        span = "<span " + " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
        span += f">{html.escape(text)}</span>"
        # KubeSpawner's template shows the description as HTML (an admin's own markup stays as is)
        description = profile.get("description") or ""
        profile["description"] = f"{description}<br>{span}" if description else span
    return profile_list


def render_profile_form(spawner: Any, profile_list: list[dict]) -> str:
    """KubeSpawner's profile form for ``profile_list``, with limits, preselecting the
    spawner's current ``user_options`` (those that still fit the profile list)."""
    profiles = spawner._get_initialized_profile_list(profile_list)
    user_options = spawner.user_options or {}
    if user_options:
        try:
            spawner._validate_user_options(profiles)  # against the admin's own regexes
        except (ValueError, KeyError, StopIteration) as e:
            spawner.log.info("Spawn form for %s: not preselecting the saved options (%s)", spawner._log_name, e)
            user_options = {}
    loader = ChoiceLoader(
        [
            FileSystemLoader(spawner.additional_profile_form_template_paths),
            PackageLoader("kubespawner", "templates"),
        ]
    )
    env = Environment(loader=loader)  # as KubeSpawner renders it
    # profiles are shown in the admin's order (KubeSpawner does the same)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    if spawner.profile_form_template:
        template = env.from_string(spawner.profile_form_template)
    else:
        template = env.get_template("form.html")
    profiles = with_idle_text(with_limits(profiles, spawner), spawner)
    form = template.render(profile_list=profiles, user_options=user_options)
    return form + _FREE_ENTRY_SCRIPT + _IDLE_SCRIPT


# After KubeSpawner's own script (it uses jQuery too). A value outside the field's pattern gets
# the field's own message (the range) as the browser's message rather than "Please match the
# requested format."; a field hidden because a listed choice is selected is disabled, so a
# leftover out-of-range value in it cannot block the form without a visible message.
_FREE_ENTRY_SCRIPT = """
<script>
  $('.js-other-input[pattern]').each(function () {
    const input = this;
    const check = function () {
      input.setCustomValidity('');
      if (input.validity.patternMismatch && input.title) input.setCustomValidity(input.title);
    };
    input.addEventListener('input', check);
    input.addEventListener('invalid', check);
    check();
  });
  $('.js-profile-option-select').change(function () {
    $(this).parents('.js-options-container').find('.js-other-input')
      .prop('disabled', $(this).val() !== 'unlisted-choice');
  });
</script>
"""

# The idle sentence follows the selects of its profile: the text for the chosen combination,
# the words without numbers once a free-entry value ("Other") is chosen. Selects are found by
# id: KubeSpawner's own script removes their name while "Other" is selected.
_IDLE_SCRIPT = """
<script>
  $('.rayspawner-idle').each(function () {
    const idle = this;
    if (!idle.dataset.idle) return;
    const texts = JSON.parse(idle.dataset.idle);
    const keys = JSON.parse(idle.dataset.options);
    const selects = keys.map((k) => document.getElementById('profile-option-' + idle.dataset.slug + '--' + k));
    const update = function () {
      const values = selects.map((s) => (s ? s.value : ''));
      const text = values.includes('unlisted-choice') ? idle.dataset.hint : texts[JSON.stringify(values)];
      idle.textContent = text === undefined ? idle.dataset.hint : text;
    };
    // jQuery's handler: KubeSpawner's preselection fires jQuery's change event, not the DOM's
    $(selects.filter(Boolean)).change(update);
    update();
  });
</script>
"""
