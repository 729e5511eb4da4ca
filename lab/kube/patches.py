"""The three PATCH flavours the API server accepts: JSON patch, merge patch, strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from lab.kube.errors import bad_request, unsupported_media_type

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# Lists the strategic merge patch merges item by item, by this key, instead of replacing.
# "ports" is keyed by containerPort in a container and by port in a Service; see _merge_key.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, a null deletes the key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        return (
            "containerPort"
            if any(isinstance(item, dict) and "containerPort" in item for item in items)
            else "port"
        )
    return _MERGE_KEYS.get(field)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip_directives(item) for key, item in value.items() if not key.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value


def _merge_list(target: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = copy.deepcopy(target)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"strategic merge patch: list item without merge key {key!r}")
        position = next(
            (
                index
                for index, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(_strip_directives(item))
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch, except lists with a known merge key (containers, env, ports...) merge by that key.

    Honours `$patch: replace|delete` on maps and `$patch: delete` on list items; other directives
    (`$setElementOrder`, `$retainKeys`) only order or prune and are dropped.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list):
            merge_key = _merge_key(key, value)
            existing = result.get(key)
            if merge_key is None:
                result[key] = _strip_directives(value)
            else:
                result[key] = _merge_list(existing if isinstance(existing, list) else [], value, merge_key)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def apply_patch(target: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """The patched copy of `target`; the original is left untouched."""
    media_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("a JSON patch must be a list of operations")
        try:
            patched = jsonpatch.apply_patch(target, patch, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise bad_request(f"the JSON patch could not be applied: {exc}") from None
    elif media_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        merge = merge_patch if media_type == MERGE_PATCH else strategic_merge_patch
        patched = merge(target, patch)
    else:
        raise unsupported_media_type(content_type)
    if not isinstance(patched, dict):
        raise bad_request("the patch did not leave an object")
    return patched
