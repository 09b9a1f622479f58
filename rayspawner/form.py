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
- **Choices kept.** The form is rendered again whenever the spawner's ``user_options``
  change, and preselects them. After a refused spawn JupyterHub shows the form again with
  the error at the top; KubeSpawner's template then preselects the refused profile and
  choices (its own renders once and would fall back to the default profile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader

from .errors import InvalidOptions
from .quantities import format_cpu, format_memory, parse_cpu, parse_memory

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
    form = template.render(profile_list=with_limits(profiles, spawner), user_options=user_options)
    return form + _FREE_ENTRY_SCRIPT


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
