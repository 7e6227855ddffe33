"""Admission cost on updates: ratcheting (unchanged values cannot fail), the cached validator,
and patches that never write through to the stored object."""
from __future__ import annotations

import copy

from loom.local import admission, patching

SCHEMA = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer", "maximum": 10},
                "items": {"type": "array", "items": {
                    "type": "object", "properties": {"n": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.n > 0", "message": "n must be positive"}]}},
            },
            "x-kubernetes-validations": [{"rule": "self.size < 5", "message": "size must be under 5"}],
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string", "maxLength": 8}}},
    },
}


def obj(spec, status=None):
    out = {"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"}, "spec": spec}
    if status is not None:
        out["status"] = status
    return out


def messages(errors):
    return [str(e) for e in errors]


def test_create_runs_every_rule_and_the_schema():
    errors = messages(admission.admit(SCHEMA, obj({"size": 11})))
    assert errors == ["spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"]
    assert messages(admission.admit(SCHEMA, obj({"size": 7}))) == ['spec: Invalid value: "object": size must be under 5']


def test_an_unchanged_spec_is_not_revalidated_on_a_status_write():
    # Stored before its CRD gained the rule and the bound (ratcheting, as Kubernetes >= 1.30).
    old = obj({"size": 11})
    assert admission.admit(SCHEMA, obj({"size": 11}, {"phase": "Ready"}), old) == []
    # The changed status is still checked, and a changed spec is checked in full.
    assert messages(admission.admit(SCHEMA, obj({"size": 11}, {"phase": "TooLongPhase"}), old)) == [
        "status.phase: Too long: may not be longer than 8"]
    assert messages(admission.admit(SCHEMA, obj({"size": 12}), old)) == [
        "spec.size: Invalid value: 12: spec.size in body should be less than or equal to 10"]
    assert messages(admission.admit(SCHEMA, obj({"size": 8}), old)) == ['spec: Invalid value: "object": size must be under 5']


def test_required_fields_are_checked_on_updates_too():
    assert messages(admission.admit(SCHEMA, {"apiVersion": "x/v1", "kind": "W", "metadata": {}}, obj({"size": 1}))) == [
        "spec: Required value"]


def test_list_items_are_not_correlated_so_their_rules_still_run():
    old = obj({"size": 1, "items": [{"n": 0}]})
    new = obj({"size": 1, "items": [{"n": 0}]}, {"phase": "x"})
    assert messages(admission.admit(SCHEMA, new, old)) == ['spec.items[0]: Invalid value: "object": n must be positive']


def test_the_validator_is_built_once_per_schema_object():
    schema = copy.deepcopy(SCHEMA)
    assert admission._validator(schema) is admission._validator(schema)
    assert admission._validator(copy.deepcopy(SCHEMA)) is not admission._validator(schema)


def test_patches_leave_their_target_unchanged():
    target = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": {"b": [1, 2]}}, "status": {"p": 1}}
    before = copy.deepcopy(target)
    merged = patching.merge_patch(target, {"status": {"p": 2, "q": {"r": 1}}, "metadata": {"labels": {"x": None}}})
    assert merged == {"metadata": {"name": "a", "labels": {}}, "spec": {"a": {"b": [1, 2]}}, "status": {"p": 2, "q": {"r": 1}}}
    strategic = patching.strategic_merge_patch(target, {"spec": {"a": {"c": 1}}, "status": {"$patch": "replace", "z": 1}})
    assert strategic == {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": {"b": [1, 2], "c": 1}},
                         "status": {"z": 1}}
    assert target == before
