"""The resource types the emulator serves, and helpers for their names."""

from __future__ import annotations

import datetime
import random
import re
from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: ``group``/``version``/``plural`` and its ``kind``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    builtin: bool = True  # False for custom resources (no strategic merge patch)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Unique key, e.g. ``pods`` or ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


CORE = [
    ResourceType("", "v1", "pods", "Pod", True, ("po",), ("status", "log", "exec"), ("all",)),
    ResourceType("", "v1", "services", "Service", True, ("svc",), ("status",), ("all",)),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "events", "Event", True, ("ev",)),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status",), ("all",)),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status",), ("all",)),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
]

RAYCLUSTER = ResourceType("ray.io", "v1", "rayclusters", "RayCluster", True, (), ("status",), ("all",), builtin=False)


@dataclass
class Registry:
    """The set of served resource types (RayCluster only in KubeRay mode)."""

    kuberay: bool = False
    types: list[ResourceType] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.types = list(CORE) + ([RAYCLUSTER] if self.kuberay else [])

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        for t in self.types:
            if t.group == group and t.version == version and t.plural == plural:
                return t
        return None

    def by_name(self, name: str) -> ResourceType:
        """Look up by plural, ``plural.group``, kind or short name (case-insensitive)."""
        n = name.lower()
        for t in self.types:
            if n in (t.plural, t.key, t.kind.lower(), t.singular) or n in t.short_names:
                return t
        raise KeyError(f"unknown resource {name!r}")

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for t in self.types:
            if t.api_version == api_version and t.kind == kind:
                return t
        return None

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for t in self.types:
            out.setdefault(t.group, [])
            if t.version not in out[t.group]:
                out[t.group].append(t.version)
        return out


DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    r"validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def name_errors(rtype: ResourceType, name: str) -> list[str]:
    """Validation messages for ``metadata.name`` (empty when valid)."""
    if rtype.plural == "services":
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        return [] if DNS1035_LABEL.match(name) else [DNS1035_MSG]
    if rtype.plural == "namespaces":
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        return [] if DNS1123_LABEL.match(name) else [LABEL_MSG]
    if rtype.plural in ("roles", "rolebindings", "clusterroles", "clusterrolebindings"):
        return [] if name and "/" not in name and name not in (".", "..") else ["may not contain '/'"]
    if len(name) > 253:
        return ["must be no more than 253 characters"]
    return [] if DNS1123_SUBDOMAIN.match(name) else [SUBDOMAIN_MSG]


def label_errors(labels: dict[str, str]) -> list[tuple[str, str, str]]:
    """(field, value, message) for invalid label keys/values."""
    errs = []
    for k, v in (labels or {}).items():
        prefix, _, nm = k.rpartition("/")
        if not nm or len(nm) > 63 or not QUALIFIED_NAME.match(nm) or (prefix and not DNS1123_SUBDOMAIN.match(prefix)):
            errs.append(
                (
                    "metadata.labels",
                    k,
                    "name part must consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character",
                )
            )
        if not isinstance(v, str):
            errs.append(("metadata.labels", str(v), "label values must be strings"))
        elif len(v) > 63:
            errs.append(("metadata.labels", v, "must be no more than 63 characters"))
        elif not LABEL_VALUE.match(v):
            errs.append(("metadata.labels", v, LABEL_VALUE_MSG))
    return errs


_RAND_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(n: int = 5) -> str:
    """Like apimachinery's utilrand.String: consonants and digits."""
    return "".join(random.choice(_RAND_ALPHABET) for _ in range(n))


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
