"""Annotation readers: CSV and Label Studio JSON, and their errors."""
from __future__ import annotations

import json

import pytest

from loom.workloads import annotations as annot


def ls_task(tid, item, *anns):
    return {"id": tid, "data": {"id": item, "text": "..."},
            "annotations": [{"completed_by": who, "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                                              "value": {"choices": [lab]}}]} for who, lab in anns]}


def test_labelstudio_export():
    tasks = [
        ls_task(1, "iris-000", (1, "setosa"), ({"id": 2, "email": "bob@x.org"}, "setosa")),
        ls_task(2, "iris-001", (1, "virginica")),
        {"id": 3, "data": {"text": "no id column"}, "annotations": [
            {"completed_by": 1, "result": [{"value": {"choices": ["versicolor"]}}]},
            {"completed_by": 2, "was_cancelled": True, "result": [{"value": {"choices": ["setosa"]}}]},
            {"completed_by": 3, "result": []},  # skipped
        ]},
    ]
    df = annot.parse(json.dumps(tasks).encode(), "s3://b/ls.json", "labelstudio", "id")
    assert df.to_dict("records") == [
        {"item": "iris-000", "annotator": "1", "label": "setosa"},
        {"item": "iris-000", "annotator": "bob@x.org", "label": "setosa"},
        {"item": "iris-001", "annotator": "1", "label": "virginica"},
        {"item": "3", "annotator": "1", "label": "versicolor"},
    ]


@pytest.mark.parametrize("payload,message", [
    (b"{not json", "malformed JSON s3://b/ls.json"),
    (b'{"id": 1}', "must be a JSON list of tasks (got dict)"),
    (json.dumps([{"data": {}, "annotations": []}]).encode(), "task[0] has neither data.id nor an id"),
    (json.dumps([{"id": 5, "annotations": [{"result": [{"value": {"choices": ["a"]}}]}]}]).encode(),
     "task '5': annotations[0] has no completed_by"),
    (json.dumps([{"id": 5, "annotations": [{"completed_by": 1, "result": [{"value": {"choices": ["a", "b"]}}]}]}]).encode(),
     "only single-label classification"),
])
def test_labelstudio_errors_name_the_place(payload, message):
    with pytest.raises(annot.AnnotationError) as exc:
        annot.parse(payload, "s3://b/ls.json", "labelstudio", "id")
    assert message in str(exc.value) and exc.value.reason == "MalformedAnnotations"


def test_csv_reader_and_errors():
    df = annot.parse(b"item,annotator,label,extra\na,x,1,z\nb,x,2,z\n", "s3://b/a.csv", "csv", "id")
    assert list(df.columns) == ["item", "annotator", "label"] and len(df) == 2
    with pytest.raises(annot.AnnotationError, match="lack column"):
        annot.parse(b"item,who,label\na,x,1\n", "s3://b/a.csv", "csv", "id")
    with pytest.raises(annot.AnnotationError, match="first at line 3"):
        annot.parse(b"item,annotator,label\na,x,1\nb,,2\n", "s3://b/a.csv", "csv", "id")
    with pytest.raises(annot.AnnotationError, match="malformed CSV"):
        annot.parse(b'item,annotator,label\na,"x,1\n', "s3://b/a.csv", "csv", "id")
    with pytest.raises(annot.AnnotationError, match="unsupported format 'xml'"):
        annot.parse(b"<x/>", "s3://b/a.xml", "xml", "id")


def test_combine_refuses_double_labels():
    a = annot.parse(b"item,annotator,label\na,x,1\n", "s3://b/1.csv", "csv", "id")
    b = annot.parse(b"item,annotator,label\na,x,2\n", "s3://b/2.csv", "csv", "id")
    with pytest.raises(annot.AnnotationError, match="annotator 'x' labelled item 'a' more than once"):
        annot.combine([a, b])


def test_ratings_matrix():
    df = annot.parse(b"item,annotator,label\nb,y,cat\na,x,dog\nb,x,dog\n", "s3://b/a.csv", "csv", "id")
    r = annot.Ratings.from_long(df)
    assert (r.items, r.annotators, r.classes) == (["a", "b"], ["x", "y"], ["cat", "dog"])
    assert r.codes.tolist() == [[1, -1], [1, 0]]
