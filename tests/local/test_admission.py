"""CRD admission in the embedded API server: schema, defaults, pruning, CEL (with oldSelf)."""
from __future__ import annotations

from loom.local import admission

WIDGET = {"apiVersion": "test.loom.dev/v1", "kind": "Widget"}


def test_schema_violation_is_422_naming_the_field(http, widgets):
    body = {**WIDGET, "metadata": {"name": "iris"}, "spec": {"ratio": 1.5}}
    status, error = http("POST", widgets, body)
    assert status == 422
    assert error["kind"] == "Status" and error["reason"] == "Invalid" and error["code"] == 422
    assert error["message"] == ('Widget.test.loom.dev "iris" is invalid: spec.ratio: Invalid value: 1.5: '
                                'spec.ratio in body should be less than or equal to 1')
    assert error["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.ratio",
                                           "message": "Invalid value: 1.5: spec.ratio in body should be less than or equal to 1"}]
    assert http("GET", f"{widgets}/iris")[0] == 404  # nothing was stored


def test_all_errors_are_collected(http, widgets):
    body = {**WIDGET, "metadata": {"name": "many"}, "spec": {"size": 0, "mode": "warp", "tags": [1]}}
    status, error = http("POST", widgets, body)
    assert status == 422
    fields = [cause["field"] for cause in error["details"]["causes"]]
    assert fields == ["spec.mode", "spec.size", "spec.tags[0]"]
    assert 'spec.mode: Unsupported value: "warp": supported values: "fast", "slow"' in error["message"]
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1" in error["message"]
    assert 'spec.tags[0]: Invalid value: "integer": spec.tags[0] in body must be of type string: "integer"' in error["message"]


def test_defaults_are_applied_on_create_and_update(http, widgets):
    status, obj = http("POST", widgets, {**WIDGET, "metadata": {"name": "defaulted"}, "spec": {}})
    assert status == 201 and obj["spec"] == {"size": 3, "mode": "fast"}
    status, obj = http("PATCH", f"{widgets}/defaulted", {"spec": {"mode": None, "size": 4}},
                       "application/merge-patch+json")
    assert obj["spec"] == {"size": 4, "mode": "fast"}  # removed, so defaulted again


def test_unknown_fields_are_pruned_unless_preserved(http, widgets):
    body = {**WIDGET, "metadata": {"name": "pruned"}, "bogus": 1,
            "spec": {"size": 2, "typo": "x", "extra": {"free": {"form": True}}}}
    status, obj = http("POST", widgets, body)
    assert status == 201
    assert "bogus" not in obj and "typo" not in obj["spec"]
    assert obj["spec"]["extra"] == {"free": {"form": True}}  # x-kubernetes-preserve-unknown-fields
    status, error = http("POST", widgets + "?fieldValidation=Strict",
                         {**WIDGET, "metadata": {"name": "strict"}, "spec": {"typo": 1}})
    assert status == 400 and 'unknown field "spec.typo"' in error["message"]


def test_cel_rule_failure(http, widgets):
    body = {**WIDGET, "metadata": {"name": "split"}, "spec": {"split": {"train": 0.5, "test": 0.4}}}
    status, error = http("POST", widgets, body)
    assert status == 422
    assert error["message"] == ('Widget.test.loom.dev "split" is invalid: spec.split: Invalid value: "object": '
                                'fractions must sum to 1')
    body["spec"]["split"] = {"train": 0.5, "test": 0.5}
    assert http("POST", widgets, body)[0] == 201


def test_cel_integer_literals_in_number_fields_are_doubles(http, widgets):
    # YAML gives "1" and "0" as integers; CEL must still see doubles for `type: number`.
    body = {**WIDGET, "metadata": {"name": "split-int"}, "spec": {"split": {"train": 1, "test": 0}}}
    assert http("POST", widgets, body)[0] == 201


def test_cel_transition_rule_with_old_self(http, widgets):
    status, _ = http("POST", widgets, {**WIDGET, "metadata": {"name": "owned"}, "spec": {"owner": "alice"}})
    assert status == 201  # on create, rules with oldSelf are skipped
    status, error = http("PATCH", f"{widgets}/owned", {"spec": {"owner": "mallory"}}, "application/merge-patch+json")
    assert status == 422
    assert 'spec.owner: Invalid value: "string": owner is immutable' in error["message"]
    status, _ = http("PATCH", f"{widgets}/owned", {"spec": {"size": 9}}, "application/merge-patch+json")
    assert status == 200  # unchanged owner passes


def test_status_writes_are_pruned_and_validated_against_the_status_schema(http, widgets):
    assert http("POST", widgets, {**WIDGET, "metadata": {"name": "stat"}, "spec": {}})[0] == 201
    status, obj = http("PATCH", f"{widgets}/stat/status",
                       {"status": {"phase": "Ready", "observedGeneration": 1, "anything": [1, 2]}},
                       "application/merge-patch+json")
    assert status == 200 and obj["status"] == {"phase": "Ready", "observedGeneration": 1}  # undeclared: pruned
    status, error = http("PATCH", f"{widgets}/stat/status", {"status": {"observedGeneration": "one"}},
                         "application/merge-patch+json")
    assert (status, error["reason"]) == (422, "Invalid")
    assert error["message"] == ('Widget.test.loom.dev "stat" is invalid: status.observedGeneration: Invalid value: '
                                '"string": status.observedGeneration in body must be of type integer: "string"')
    assert http("GET", f"{widgets}/stat")[1]["status"] == {"phase": "Ready", "observedGeneration": 1}  # unchanged


# --- the functions themselves ---------------------------------------------------------------

def test_openapi_to_jsonschema_translation():
    schema = {"type": "object", "properties": {
        "a": {"type": "string", "nullable": True, "format": "date-time", "x-kubernetes-list-type": "set"},
        "b": {"x-kubernetes-int-or-string": True},
    }}
    translated = admission.to_jsonschema(schema)
    assert translated["properties"]["a"] == {"type": ["string", "null"]}
    assert translated["properties"]["b"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}


def test_admit_nullable_int_or_string_and_exclusive_bounds():
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "when": {"type": "string", "nullable": True},
        "port": {"x-kubernetes-int-or-string": True},
        "p": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
    }}}}
    assert admission.admit(schema, {"spec": {"when": None, "port": "http", "p": 0.1}}) == []
    errors = admission.admit(schema, {"spec": {"port": 1.5, "p": 0}})
    assert [e.field for e in errors] == ["spec.p", "spec.port"]
    assert str(errors[0]) == "spec.p: Invalid value: 0: spec.p in body should be greater than 0"


def test_required_fields_and_message_expression():
    schema = {"type": "object", "properties": {"spec": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.n < 3", "messageExpression": "'n is ' + string(self.n)",
                                      "fieldPath": ".n"}]}}}
    (missing,) = admission.admit(schema, {"spec": {"n": 1}})
    assert str(missing) == "spec.name: Required value"
    (too_big,) = admission.admit(schema, {"spec": {"name": "x", "n": 5}})
    assert str(too_big) == 'spec.n: Invalid value: "object": n is 5'


def test_invalid_message_brackets_several_errors():
    errors = [admission.FieldError("a", "FieldValueRequired", "Required value"),
              admission.FieldError("b", "FieldValueRequired", "Required value")]
    assert admission.invalid_error_message("X.g", "n", errors) == 'X.g "n" is invalid: [a: Required value, b: Required value]'
