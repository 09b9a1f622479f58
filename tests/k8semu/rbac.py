"""RBAC mode: bearer tokens -> users, and Role/RoleBinding (+Cluster*) evaluation.

Roles and bindings live in the store as ordinary objects (loaded from YAML files
at start, and editable through the API), so a test can add or remove a rule.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import yaml

from .resources import Registry
from .store import Store

log = logging.getLogger("k8semu.rbac")

ADMIN_USER = "system:admin"


def load_rbac_documents(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All RBAC objects (Role, RoleBinding, ClusterRole, ClusterRoleBinding) from multi-doc YAML files.

    Other kinds in the files (ServiceAccounts, …) are returned too, to be created as-is.
    """
    docs: list[dict[str, Any]] = []
    for p in paths:
        for doc in yaml.safe_load_all(Path(p).read_text()):
            if not doc:
                continue
            if doc.get("kind") == "List":
                docs.extend(i for i in doc.get("items") or [] if i)
            else:
                docs.append(doc)
    return docs


class Authorizer:
    """Maps bearer tokens to users and decides requests from the RBAC objects in the store."""

    def __init__(self, store: Store, registry: Registry, tokens: dict[str, str], admin_token: str) -> None:
        self.store = store
        self.registry = registry
        self.tokens = dict(tokens)
        self.admin_token = admin_token

    def user_for(self, token: str | None) -> str | None:
        if token is None:
            return None
        if token == self.admin_token:
            return ADMIN_USER
        return self.tokens.get(token)

    @staticmethod
    def groups_for(user: str) -> set[str]:
        groups = {"system:authenticated"}
        if user.startswith("system:serviceaccount:"):
            ns = user.split(":")[2]
            groups |= {"system:serviceaccounts", f"system:serviceaccounts:{ns}"}
        return groups

    @staticmethod
    def _subject_matches(subj: dict[str, Any], user: str, groups: set[str], binding_ns: str | None) -> bool:
        kind = subj.get("kind")
        if kind == "ServiceAccount":
            ns = subj.get("namespace") or binding_ns
            return user == f"system:serviceaccount:{ns}:{subj.get('name')}"
        if kind == "User":
            return user == subj.get("name")
        if kind == "Group":
            return subj.get("name") in groups
        return False

    @staticmethod
    def _rule_allows(rule: dict[str, Any], verb: str, group: str, resource: str, name: str | None) -> bool:
        if "nonResourceURLs" in rule and not rule.get("resources"):
            return False
        verbs = rule.get("verbs") or []
        if "*" not in verbs and verb not in verbs:
            return False
        groups = rule.get("apiGroups") or []
        if "*" not in groups and group not in groups:
            return False
        resources = rule.get("resources") or []
        base, _, sub = resource.partition("/")
        if not (
            "*" in resources
            or resource in resources
            or (sub and f"{base}/*" in resources)
            or (sub and f"*/{sub}" in resources)
        ):
            return False
        names = rule.get("resourceNames") or []
        if names and (name is None or name not in names):
            return False
        return True

    def _roles_for(self, user: str, namespace: str | None) -> list[dict[str, Any]]:
        groups = self.groups_for(user)
        rules_sources: list[dict[str, Any]] = []
        rb_t = self.registry.by_name("rolebindings")
        crb_t = self.registry.by_name("clusterrolebindings")
        role_t = self.registry.by_name("roles")
        crole_t = self.registry.by_name("clusterroles")
        bindings = [(b, None) for b in self.store.select(crb_t, None)]
        if namespace:
            bindings += [(b, namespace) for b in self.store.select(rb_t, namespace)]
        for b, ns in bindings:
            if not any(self._subject_matches(s, user, groups, ns) for s in b.get("subjects") or []):
                continue
            ref = b.get("roleRef") or {}
            if ref.get("kind") == "Role" and ns:
                role = self.store.find(role_t, ns, ref.get("name", ""))
            elif ref.get("kind") == "ClusterRole":
                role = self.store.find(crole_t, None, ref.get("name", ""))
            else:
                role = None
            if role is not None:
                rules_sources.append(role)
        return rules_sources

    def allowed(self, user: str, verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> bool:
        if user == ADMIN_USER:
            return True
        for role in self._roles_for(user, namespace):
            for rule in role.get("rules") or []:
                if self._rule_allows(rule, verb, group, resource, name):
                    return True
        log.info("RBAC deny: %s %s %s/%s ns=%s name=%s", user, verb, group, resource, namespace, name)
        return False
