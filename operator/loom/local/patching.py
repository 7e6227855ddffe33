"""PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902)."""
from __future__ import annotations

import copy
from typing import Any


class PatchTestFailed(Exception):
    """A JSON-patch ``test`` operation did not hold (answered as 422, like Kubernetes)."""


class PatchInvalid(Exception):
    """A malformed patch or an operation on a path that does not exist."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            continue  # strategic-merge directives ($patch, $setElementOrder/...): not supported, ignored
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strip_directives(patch: Any) -> Any:
    """Drop strategic-merge-patch directive keys so the patch reads as a merge patch."""
    if isinstance(patch, dict):
        return {k: strip_directives(v) for k, v in patch.items()
                if not (isinstance(k, str) and (k.startswith("$setElementOrder/") or k in ("$retainKeys", "$deleteFromPrimitiveList")))}
    if isinstance(patch, list):
        return [strip_directives(v) for v in patch if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchInvalid(f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchInvalid(f"path not found: /{'/'.join(parts)}")
    return node, parts[-1]


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchInvalid(f"path not found: /{'/'.join(parts)}")


def _remove(doc: Any, parts: list[str]) -> Any:
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchInvalid(f"path not found: /{'/'.join(parts)}")


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchInvalid(f"index out of range: /{'/'.join(parts)}")
    else:
        raise PatchInvalid(f"path not found: /{'/'.join(parts)}")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of ``doc``; raises PatchTestFailed / PatchInvalid."""
    if not isinstance(operations, list):
        raise PatchInvalid("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchInvalid(f"invalid operation: {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "test":
            try:
                actual = _get(doc, parts)
            except PatchInvalid:
                raise PatchTestFailed(f"testing value {op['path']} failed: path not found") from None
            if actual != op.get("value"):
                raise PatchTestFailed(f"testing value {op['path']} failed: test failed")
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)  # must exist
            if not parts:
                doc = copy.deepcopy(op.get("value"))
            else:
                _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, parts, value)
        else:
            raise PatchInvalid(f"unknown operation: {kind!r}")
    return doc
