"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

Strategic merge patch is served as far as it can be without the Go types' patch
strategies: maps merge, lists are replaced, and the map directives ``$patch``
(``merge``, ``replace``, ``delete``) and ``$retainKeys`` are honoured. The list
directives (``$patch`` in a list item, ``$setElementOrder/``, ``$deleteFromPrimitiveList/``)
need the merge keys of the field; they are refused (``PatchInvalid``) rather
than answered with a silently wrong object.
"""
from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from .store import clone


class PatchTestFailed(Exception):
    """A JSON-patch ``test`` operation did not hold (answered as 422, like Kubernetes)."""


class PatchInvalid(Exception):
    """A malformed patch, an operation on a path that does not exist, or an unsupported directive."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes, anything else replaces.

    Keys starting with ``$`` are ordinary keys here (directives exist in strategic merge only).
    ``target`` is left unchanged; the result shares the subtrees the patch does not touch.
    """
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}  # a new dict on each patched level only
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unsupported(directive: str) -> PatchInvalid:
    return PatchInvalid(f"strategic merge patch directive {directive} is not supported")


def _refuse_directives(value: Any) -> None:
    """Inside a list (which replaces what was there) no directive may appear."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if isinstance(key, str) and key.startswith("$"):
                raise _unsupported(f"{key} in a list item" if key == "$patch" else key)
            _refuse_directives(sub)
    elif isinstance(value, list):
        for item in value:
            _refuse_directives(item)


_DELETE = object()  # what a map patched with {"$patch": "delete"} becomes


def _strategic(target: Any, patch: Any) -> Any:
    if isinstance(patch, list):
        _refuse_directives(patch)
        return clone(patch)
    if not isinstance(patch, dict):
        return clone(patch)
    directive = patch.get("$patch", "merge")
    retain = patch.get("$retainKeys")
    for key in patch:
        if isinstance(key, str) and key.startswith("$") and key not in ("$patch", "$retainKeys"):
            raise _unsupported(key)
    if directive == "delete":
        return _DELETE
    if directive not in ("merge", "replace"):
        raise PatchInvalid(f"unknown patch type: {directive!r} in $patch")
    if retain is not None and not (isinstance(retain, list) and all(isinstance(k, str) for k in retain)):
        raise PatchInvalid("$retainKeys must be a list of strings")
    result = dict(target) if isinstance(target, dict) and directive == "merge" else {}  # see merge_patch
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        merged = None if value is None else _strategic(result.get(key), value)
        if merged is None or merged is _DELETE:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch of ``target`` (left unchanged: the result is new along the patched
    paths and shares the rest); raises PatchInvalid for what it cannot do right."""
    result = _strategic(target, patch)
    if result is _DELETE:
        raise _unsupported("$patch: delete of the whole object")
    return result


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of ``doc``; raises PatchTestFailed / PatchInvalid."""
    if not isinstance(operations, list):
        raise PatchInvalid("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(doc, operations)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchTestFailed(f"testing value failed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        # JsonPatchConflict (a path that does not exist, a list index out of range), InvalidJsonPatch.
        raise PatchInvalid(str(exc)) from None
