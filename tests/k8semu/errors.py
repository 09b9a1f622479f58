"""``Status`` error bodies shaped like the real API server's."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType


class ApiError(Exception):
    """An API failure answered with a ``Status`` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(rtype: ResourceType | None, name: str | None, kind: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if rtype is not None and rtype.group:
        d["group"] = rtype.group
    d["kind"] = kind or (rtype.plural if rtype else "")
    return d


def _qual(rtype: ResourceType) -> str:
    return rtype.key  # "pods" or "deployments.apps"


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qual(rtype)} "{name}" not found', _details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{_qual(rtype)} "{name}" already exists', _details(rtype, name))


def conflict(rtype: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409, "Conflict", f'Operation cannot be fulfilled on {_qual(rtype)} "{name}": {why}', _details(rtype, name)
    )


def invalid(rtype: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """``causes``: (field, bad value, message); the message lists them like the server does."""
    texts = []
    cause_objs = []
    for field, value, msg in causes:
        if value is None:
            text = f"{field}: Required value: {msg}"
            cause_objs.append({"reason": "FieldValueRequired", "message": f"Required value: {msg}", "field": field})
        else:
            text = f'{field}: Invalid value: "{value}": {msg}'
            cause_objs.append(
                {"reason": "FieldValueInvalid", "message": f'Invalid value: "{value}": {msg}', "field": field}
            )
        texts.append(text)
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{rtype.kind} "{name}" is invalid: {joined}',
        {**_details(rtype, name, kind=rtype.kind), "causes": cause_objs},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def unsupported_media(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def forbidden_message(
    user: str, verb: str, rtype_plural: str, sub: str | None, group: str, namespace: str | None, name: str | None
) -> str:
    res = f"{rtype_plural}/{sub}" if sub else rtype_plural
    qual = f"{rtype_plural}.{group}" if group else rtype_plural
    who = f'{qual} "{name}"' if name else qual
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return f'{who} is forbidden: User "{user}" cannot {verb} resource "{res}" in API group "{group}" {scope}'


def forbidden(
    user: str,
    verb: str,
    rtype_plural: str,
    sub: str | None,
    group: str,
    namespace: str | None,
    name: str | None,
    extra: str = "",
) -> ApiError:
    msg = forbidden_message(user, verb, rtype_plural, sub, group, namespace, name) + extra
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    d["kind"] = rtype_plural
    return ApiError(403, "Forbidden", msg, d)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")
