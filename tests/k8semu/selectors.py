"""Label and field selectors, parsed like the API server parses them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable


class SelectorError(ValueError):
    """An unparsable selector (the server answers 400 BadRequest)."""


@dataclass
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        val = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op == "=":
            return has and val == self.values[0]
        if self.op == "!=":
            return not has or val != self.values[0]
        if self.op == "in":
            return has and val in self.values
        if self.op == "notin":
            return not has or val not in self.values
        raise SelectorError(self.op)


_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (x.strip() for x in parts) if p]


def parse_label_selector(s: str | None) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split_top(s or ""):
        m = _EQ_RE.match(part)
        if m:
            op = "=" if m.group(2) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, (m.group(3),)))
            continue
        m = _SET_RE.match(part)
        if m:
            neg, key, op, vals = m.groups()
            if op:
                if neg:
                    raise SelectorError(f"unable to parse requirement: {part!r}")
                values = tuple(v.strip() for v in vals.split(",") if v.strip())
                reqs.append(Requirement(key, op, values))
            else:
                reqs.append(Requirement(key, "!exists" if neg else "exists"))
            continue
        raise SelectorError(f"unable to parse requirement: found '{part}', expected: valid selector")
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def match_label_selector_obj(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    """Match a structured LabelSelector (matchLabels/matchExpressions); empty matches all."""
    labels = labels or {}
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}[e["operator"]]
        if not Requirement(e["key"], op, tuple(e.get("values") or ())).matches(labels):
            return False
    return True


FIELD_GETTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name"),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace"),
    "status.phase": lambda o: (o.get("status") or {}).get("phase"),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName"),
    "involvedObject.kind": lambda o: (o.get("involvedObject") or {}).get("kind"),
    "involvedObject.name": lambda o: (o.get("involvedObject") or {}).get("name"),
    "involvedObject.namespace": lambda o: (o.get("involvedObject") or {}).get("namespace"),
    "involvedObject.uid": lambda o: (o.get("involvedObject") or {}).get("uid"),
    "reason": lambda o: o.get("reason"),
    "type": lambda o: o.get("type"),
}


def parse_field_selector(s: str | None) -> list[tuple[str, str, str]]:
    out = []
    for part in _split_top(s or ""):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid selector: '{s}'; can't understand '{part}'")
        key, op, val = m.groups()
        if key not in FIELD_GETTERS:
            raise SelectorError(f"field label not supported: {key}")
        out.append((key, "!=" if op == "!=" else "=", val))
    return out


def fields_match(reqs: list[tuple[str, str, str]], obj: dict[str, Any]) -> bool:
    for key, op, val in reqs:
        got = FIELD_GETTERS[key](obj)
        got = "" if got is None else str(got)
        if (op == "=") != (got == val):
            return False
    return True
