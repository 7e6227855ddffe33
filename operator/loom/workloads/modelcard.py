"""The model card: what was evaluated, on what data, how it scored, and the verdict.

JSON for machines (``model-card.json``) and Markdown for people
(``model-card.md``), both rendered from the same dict.
"""
from __future__ import annotations

from typing import Any

SCHEMA = "loom.dev/model-card/v1"


def build(task: dict[str, Any], result: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    failing = [c for c in checks if not c["passed"]]
    return {
        "schema": SCHEMA,
        "evaluation": {"namespace": task.get("namespace"), "name": task.get("name")},
        "model": result["model"],
        "trainingRun": task.get("trainingRun"),
        "data": {
            "datasetVersion": (task.get("versions") or {}).get("dataset"),
            "labelVersion": (task.get("versions") or {}).get("labels"),
            "testSplit": result["test"],
            "datasetTestSplit": result.get("datasetTest"),
            "idColumn": task.get("idColumn"),
            "labelColumn": task.get("labelColumn"),
        },
        "classes": result["classes"],
        "features": result.get("features"),
        "metrics": result["metrics"],
        "perClass": result.get("perClass"),
        "confusionMatrix": result.get("confusionMatrix"),
        "calibration": result.get("calibration"),
        "slices": result.get("slices"),
        "robustness": result.get("robustness"),
        "latency": result.get("latency"),
        "champion": result.get("champion"),
        "leakage": result.get("leakage"),
        "notes": result.get("notes") or [],
        "checks": checks,
        "verdict": "Failed" if failing else "Passed",
    }


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_num(v) for v in row) + " |" for row in rows]
    return out + [""]


def markdown(card: dict[str, Any]) -> str:
    ev, model, data = card["evaluation"], card["model"], card["data"]
    lines = [f"# Model card: {ev.get('name') or 'evaluation'}", "",
             f"**Verdict: {card['verdict']}**", "",
             "## Model", "",
             f"- model: `{model['uri']}`", f"- digest: `{model['digest']}`",
             f"- training run: {card.get('trainingRun') or '-'}",
             f"- classes: {', '.join(card['classes'])}",
             f"- features: {', '.join(card.get('features') or [])}", "",
             "## Data", "",
             f"- dataset version: `{data.get('datasetVersion') or '-'}`",
             f"- label version: `{data.get('labelVersion') or '-'}`",
             f"- test split (scored): `{data['testSplit']['uri']}` `{data['testSplit']['digest']}` ({data['testSplit'].get('rows')} rows)"]
    if data.get("datasetTestSplit"):
        d = data["datasetTestSplit"]
        lines.append(f"- frozen dataset test split: `{d['uri']}` `{d['digest']}` ({d.get('rows')} rows)")
    lines.append("")
    if card.get("leakage"):
        lines += ["## Leakage proof", "", card["leakage"].get("message", ""), ""]
    lines += ["## Checks", ""] + _table(["check", "value", "bound", "passed", "message"],
                                         [[c["metric"], c.get("value"), c.get("bound", ""), "yes" if c["passed"] else "NO",
                                           c.get("message", "")] for c in card["checks"]])
    lines += ["## Metrics", ""] + _table(["metric", "value"], [[k, v] for k, v in sorted(card["metrics"].items())])
    if card.get("perClass"):
        lines += ["### Per class", ""] + _table(["class", "precision", "recall", "f1", "support"],
                                                 [[c, m["precision"], m["recall"], m["f1"], m["support"]]
                                                  for c, m in card["perClass"].items()])
    if card.get("confusionMatrix"):
        lines += ["### Confusion matrix (rows: true, columns: predicted)", ""]
        lines += _table([""] + card["classes"], [[c] + row for c, row in zip(card["classes"], card["confusionMatrix"])])
    cal = card.get("calibration")
    if cal:
        lines += ["## Calibration", "", f"Expected calibration error: {_num(cal['ece'])} ({cal['bins']} bins)", ""]
        lines += _table(["bin", "confidence range", "rows", "mean confidence", "accuracy"],
                        [[b["bin"], f"({b['lower']:.2f}, {b['upper']:.2f}]", b["count"], b.get("confidence"),
                          b.get("accuracy")] for b in cal["table"]])
    if card.get("slices"):
        lines += ["## Slices", ""] + _table(
            ["column", "value", "rows", "accuracy", "f1_macro", "status"],
            [[s["column"], s["value"], s["rows"], (s.get("metrics") or {}).get("accuracy"),
              (s.get("metrics") or {}).get("f1_macro"), "skipped (< minRows)" if s.get("skipped") else "scored"]
             for s in card["slices"]])
    if card.get("robustness"):
        lines += ["## Robustness", ""] + _table(
            ["perturbation", "type", "parameters", "accuracy", "f1_macro", "accuracy drop"],
            [[r["name"], r["type"], r["parameters"], r["metrics"]["accuracy"], r["metrics"]["f1_macro"],
              r.get("accuracyDrop")] for r in card["robustness"]])
    lat = card.get("latency")
    if lat:
        lines += ["## Latency (ONNX Runtime)", "",
                  f"batch size {lat['batchSize']}, {lat['iterations']} calls after {lat['warmup']} warm-up, {lat['provider']}", ""]
        lines += _table(["p50 ms", "p95 ms", "p99 ms", "throughput rows/s"],
                        [[lat["latency_p50_ms"], lat["latency_p95_ms"], lat["latency_p99_ms"], lat["throughput_rps"]]])
    champ = card.get("champion")
    if champ:
        lines += ["## Champion", ""]
        if champ.get("model"):
            lines += [f"- Deployment {champ.get('deployment')} serves `{champ['model']['digest']}`",
                      f"- {champ['metric']}: champion {_num(champ.get('value'))}, candidate "
                      f"{_num(card['metrics'].get(champ['metric']))}, tolerance {_num(float(champ.get('tolerance') or 0))}", ""]
        else:
            lines += [f"- no champion: {champ.get('reason') or 'the Deployment serves no model yet'}", ""]
    if card.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in card["notes"]] + [""]
    return "\n".join(lines)
