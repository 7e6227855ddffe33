"""Admission for custom resources, as the real API server does it for CRDs.

Order (as in kube-apiserver): prune unknown fields, apply ``default:`` values,
validate against the OpenAPI v3 schema, then evaluate the CEL rules
(``x-kubernetes-validations``). Errors are Kubernetes-style field errors,
e.g. ``spec.x: Invalid value: 1.5: spec.x in body should be less than or equal to 1``.

On updates, validation is ratcheted as in Kubernetes >= 1.30 (CRDValidationRatcheting):
a value the update leaves unchanged cannot fail it. The CEL rules of unchanged values are
not evaluated (Kubernetes evaluates them and drops their errors: the same outcome), and
the schema is checked on the top-level fields that changed (a status write does not
re-validate the spec). The compiled JSON Schema validator is kept per schema.
"""
from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import jsonschema

Obj = dict[str, Any]
ROOT_KEYS = ("apiVersion", "kind", "metadata")


# --- pruning and defaulting ----------------------------------------------------------------

def _child_schema(schema: Obj, key: str) -> Obj | None:
    """The schema of ``key`` in an object: its property, else additionalProperties (if a schema)."""
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    addl = schema.get("additionalProperties")
    return addl if isinstance(addl, dict) else None


def prune(schema: Obj, value: Any, root: bool = True, pruned: list[str] | None = None, path: str = "") -> Any:
    """Drop fields the schema does not declare (unless it preserves unknown fields), in place.

    The paths of the dropped fields are appended to ``pruned`` (for strict field validation).
    """
    pruned = [] if pruned is None else pruned
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or schema.get("additionalProperties") is True
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        for key in list(value):
            if (root or embedded) and key in ROOT_KEYS:
                continue
            sub = _child_schema(schema, key)
            if sub is None:
                if not keep_unknown:
                    del value[key]
                    pruned.append(f"{path}.{key}" if path else key)
            elif key in props and value[key] is None and not sub.get("nullable"):
                del value[key]  # null in a non-nullable property counts as absent (so defaults can apply)
            else:
                prune(sub, value[key], False, pruned, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            prune(schema["items"], item, False, pruned, f"{path}[{index}]")
    return value


def apply_defaults(schema: Obj, value: Any) -> Any:
    """Fill in ``default:`` values of absent fields of the objects that exist, in place."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in value:
            sub = _child_schema(schema, key)
            if sub is not None:
                apply_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


# --- OpenAPI -> JSON Schema ----------------------------------------------------------------

def to_jsonschema(schema: Any) -> Any:
    """Translate OpenAPI v3.0 specifics into draft-4 JSON Schema (which they mostly are)."""
    if isinstance(schema, list):
        return [to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "default", "example", "description"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif isinstance(value, (dict, list)) and key not in ("enum", "required"):
            out[key] = to_jsonschema(value)
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    return out


# --- errors ----------------------------------------------------------------------------------

def fmt_value(value: Any) -> str:
    """Format a value as Go's %v of a JSON value would (as the API server prints it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    return '"object"' if isinstance(value, dict) else '"array"'


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "object" if isinstance(value, dict) else "array"


def field_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class FieldError:
    def __init__(self, field: str, reason: str, detail: str) -> None:
        self.field = field
        self.reason = reason  # FieldValueInvalid, FieldValueRequired, ...
        self.detail = detail  # e.g. 'Invalid value: 1.5: ... should be ...'

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail

    def cause(self) -> Obj:
        return {"reason": self.reason, "message": self.detail, "field": self.field}


def _schema_error(error: jsonschema.ValidationError) -> FieldError:
    path = field_path(error.absolute_path)
    kind, bound, value = error.validator, error.validator_value, error.instance
    inbody = f"{path} in body"

    def invalid(text: str) -> FieldError:
        return FieldError(path, "FieldValueInvalid", f"Invalid value: {fmt_value(value)}: {text}")

    if kind == "required":
        m = re.match(r"^'(.*)' is a required property", error.message)
        missing = m.group(1) if m else "?"
        return FieldError(f"{path}.{missing}" if path else missing, "FieldValueRequired", "Required value")
    if kind == "type":
        expected = bound if isinstance(bound, str) else " or ".join(b for b in bound if b != "null")
        return FieldError(path, "FieldValueTypeInvalid",
                          f'Invalid value: "{json_type(value)}": {inbody} must be of type {expected}: "{json_type(value)}"')
    if kind == "enum":
        supported = ", ".join(fmt_value(v) for v in bound if v is not None)
        return FieldError(path, "FieldValueNotSupported", f"Unsupported value: {fmt_value(value)}: supported values: {supported}")
    if kind == "maximum":
        exclusive = error.schema.get("exclusiveMaximum") is True
        return invalid(f"{inbody} should be less than {'' if exclusive else 'or equal to '}{fmt_value(bound)}")
    if kind == "minimum":
        exclusive = error.schema.get("exclusiveMinimum") is True
        return invalid(f"{inbody} should be greater than {'' if exclusive else 'or equal to '}{fmt_value(bound)}")
    if kind == "maxLength":
        return FieldError(path, "FieldValueTooLong", f"Too long: may not be longer than {bound}")
    if kind == "minLength":
        return invalid(f"{inbody} should be at least {bound} chars long")
    if kind == "pattern":
        return invalid(f"{inbody} should match '{bound}'")
    if kind == "maxItems":
        return FieldError(path, "FieldValueTooMany", f"Too many: {len(value)}: must have at most {bound} items")
    if kind == "minItems":
        return invalid(f"{inbody} should have at least {bound} items")
    if kind == "uniqueItems":
        return FieldError(path, "FieldValueDuplicate", f"Duplicate value: {fmt_value(value)}")
    return invalid(f"{inbody}: {error.message}")


# --- CEL -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _program(expression: str) -> Any:
    import celpy  # imported lazily: only CRDs with rules need it

    env = celpy.Environment()
    return env.program(env.compile(expression))


def to_cel(value: Any, schema: Obj | None) -> Any:
    """JSON -> CEL values; numbers typed by the schema (``type: number`` is always a double)."""
    from celpy import celtypes

    schema = schema or {}
    if isinstance(value, dict):
        return celtypes.MapType({celtypes.StringType(k): to_cel(v, _child_schema(schema, k)) for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items")) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, (int, float)):
        if schema.get("type") == "number" or isinstance(value, float):
            return celtypes.DoubleType(float(value))
        return celtypes.IntType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    return None


_REASONS = {
    "FieldValueRequired": "Required value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueDuplicate": "Duplicate value",
}


def _evaluate(expression: str, activation: Obj) -> Any:
    result = _program(expression).evaluate(activation)
    if isinstance(result, Exception):
        raise result
    return result


_ABSENT = object()


def _cel_errors(schema: Obj, value: Any, old: Any, path: list[Any], has_old: bool,
                cel: Any = _ABSENT, old_cel: Any = _ABSENT) -> list[FieldError]:
    """The CEL rule errors of ``value`` and its children.

    ``cel``/``old_cel``: the CEL forms of value/old when the parent converted them already
    (a subtree is converted once, not once per rule on the way down).
    """
    errors: list[FieldError] = []
    # Ratcheting: an unchanged value's rules are skipped (its list items are still
    # evaluated below: Kubernetes cannot correlate them with old items, so neither do we).
    unchanged = has_old and value == old
    rules = [] if unchanged else schema.get("x-kubernetes-validations") or []
    for rule in rules:
        expression = rule.get("rule", "")
        transition = re.search(r"\boldSelf\b", expression) is not None
        if transition and not has_old:
            continue  # transition rules only run on updates where the old value exists
        if cel is _ABSENT:
            cel = to_cel(value, schema)
        activation = {"self": cel}
        if has_old:
            if old_cel is _ABSENT:
                old_cel = to_cel(old, schema)
            activation["oldSelf"] = old_cel
        where = field_path(path)
        if rule.get("fieldPath"):
            where = (where + rule["fieldPath"]) if rule["fieldPath"].startswith(".") else f"{where}.{rule['fieldPath']}"
            where = where.lstrip(".")
        try:
            ok = bool(_evaluate(expression, activation))
        except Exception as exc:  # noqa: BLE001 - CEL runtime errors are reported, not raised
            errors.append(FieldError(where, "FieldValueInvalid",
                                     f"Invalid value: \"{schema.get('type', 'object')}\": rule evaluation error: {exc.args[0] if exc.args else exc}"))
            continue
        if ok:
            continue
        message = rule.get("message") or f"failed rule: {expression}"
        if rule.get("messageExpression"):
            try:
                message = str(_evaluate(rule["messageExpression"], activation))
            except Exception:  # noqa: BLE001 - fall back to the static message, as Kubernetes does
                pass
        reason = rule.get("reason") or "FieldValueInvalid"
        if reason in _REASONS:
            detail = f"{_REASONS[reason]}: {message}"
        else:
            detail = f"Invalid value: \"{schema.get('type', 'object')}\": {message}"
        errors.append(FieldError(where, reason, detail))

    # Descend into the children that are present.
    if isinstance(value, dict):
        for key, child in value.items():
            sub = _child_schema(schema, key)
            if sub is None or (not path and key == "metadata"):
                continue
            child_has_old = has_old and isinstance(old, dict) and key in old
            child_cel = _ABSENT if cel is _ABSENT or cel is None else cel.get(key, _ABSENT)
            child_old_cel = _ABSENT if old_cel is _ABSENT or old_cel is None or not child_has_old \
                else old_cel.get(key, _ABSENT)
            errors += _cel_errors(sub, child, old.get(key) if child_has_old else None, path + [key], child_has_old,
                                  child_cel, child_old_cel)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        cel_items = cel if isinstance(cel, list) and len(cel) == len(value) else None
        for index, item in enumerate(value):
            # List items are not correlated with old items (only map-lists are, in Kubernetes).
            errors += _cel_errors(schema["items"], item, None, path + [index], False,
                                  cel_items[index] if cel_items is not None else _ABSENT)
    return errors


# --- the whole admission ---------------------------------------------------------------------

_VALIDATORS: dict[int, tuple[Obj, Any]] = {}  # id(schema) -> (schema, its validator)


def _validator(schema: Obj) -> Any:
    """The JSON Schema validator of a CRD version's schema, translated and built once.

    Keyed by identity (a registered type keeps its schema object); the entry holds the
    schema, so the id cannot be reused by another object while cached.
    """
    hit = _VALIDATORS.get(id(schema))
    if hit is None or hit[0] is not schema:
        if len(_VALIDATORS) >= 256:
            _VALIDATORS.clear()
        hit = _VALIDATORS[id(schema)] = (schema, jsonschema.Draft4Validator(to_jsonschema(schema)))
    return hit[1]


def admit(schema: Obj | None, obj: Obj, old: Obj | None = None, pruned: list[str] | None = None) -> list[FieldError]:
    """Prune and default ``obj`` in place; return the validation errors (empty if valid)."""
    if not schema:
        return []
    prune(schema, obj, pruned=pruned)
    apply_defaults(schema, obj)
    body = {k: v for k, v in obj.items() if k != "metadata"}  # metadata is the server's business
    old_body = {k: v for k, v in (old or {}).items() if k != "metadata"}
    errors = _schema_errors(schema, body, old_body if old is not None else None)
    if errors:
        return errors  # CEL rules assume a well-typed object, as in Kubernetes
    return _cel_errors(schema, body, old_body, [], old is not None)


_SHALLOW_ROOT = {"type", "properties", "required"}  # root keywords the ratcheted path checks itself


def _schema_errors(schema: Obj, body: Obj, old_body: Obj | None) -> list[FieldError]:
    """The JSON Schema errors of ``body``; on an update, of its changed top-level fields only."""
    validator = _validator(schema)
    root = validator.schema
    if old_body is None or not set(root) <= _SHALLOW_ROOT or root.get("type", "object") != "object":
        found = list(validator.iter_errors(body))
    else:
        missing = [k for k in root.get("required") or [] if k not in body]
        found = list(validator.descend(body, {"required": missing}) if missing else [])
        properties = root.get("properties") or {}
        for key, value in body.items():
            if key in properties and not (key in old_body and old_body[key] == value):
                found += validator.descend(value, properties[key], path=key, schema_path=key)
    return [_schema_error(e) for e in sorted(found, key=lambda e: list(map(str, e.absolute_path)))]


def invalid_error_message(group_kind: str, name: str, errors: list[FieldError]) -> str:
    listed = ", ".join(str(e) for e in errors)
    return f'{group_kind} "{name}" is invalid: ' + (listed if len(errors) == 1 else f"[{listed}]")
