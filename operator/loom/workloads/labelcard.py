"""The label card as Markdown, rendered from its JSON (the JSON is the record;
this is the page a person reads)."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def card_markdown(card: dict[str, Any]) -> str:
    gate = card["agreement"]["gate"]
    figs = card["agreement"]["figures"]
    adj = card["adjudication"]
    g = card.get("guidelines")
    lines = [
        f"# Label card: {card.get('dataset') or 'dataset'} / {card['labelColumn']}",
        "",
        f"- Labelled version: `{card['version']}`",
        f"- Dataset version: `{card['datasetVersion']}`",
        f"- Guidelines: {g['uri']} version {g['version']}" + (f" (`{g['digest']}`)" if g.get("digest") else "")
        if g else "- Guidelines: not recorded (spec.guidelines unset)",
        f"- Classes: {', '.join(card['classes'])}",
        f"- Adjudication: {adj['method']}" + (f" ({adj['iterations']} EM iterations)" if adj.get("iterations") else ""),
        f"- Gate: {gate['metric']} {gate['value']:.3f} >= minAgreement {gate['minAgreement']:g}",
        "",
        "## Agreement",
        "",
        "| statistic | value | items |",
        "|---|---|---|",
        f"| Cohen's kappa (mean over pairs) | {_f(figs['cohenKappa']['value'])} | {figs['cohenKappa']['items']} |",
        f"| Fleiss' kappa | {_f(figs['fleissKappa']['value'])} | {figs['fleissKappa']['items']} |",
        f"| Krippendorff's alpha (nominal) | {_f(figs['krippendorffAlpha']['value'])} | {figs['krippendorffAlpha']['items']} |",
        *([f"Before the gold exclusions (every annotator): Cohen {_f(before['cohenKappa'])}, "
           f"Fleiss {_f(before['fleissKappa'])}, Krippendorff {_f(before['krippendorffAlpha'])}.", ""]
          if (before := card["agreement"].get("beforeExclusion")) else [""]),
        "Per label (one-vs-rest):",
        "",
        "| label | Cohen | Fleiss | Krippendorff |",
        "|---|---|---|---|",
        *(f"| {p['label']} | {_f(p['cohenKappa'])} | {_f(p['fleissKappa'])} | {_f(p['krippendorffAlpha'])} |"
          for p in figs["perLabel"]),
        "",
        "Pairs (Cohen's kappa):",
        "",
        "| annotators | kappa | items |",
        "|---|---|---|",
        *(f"| {' / '.join(p['annotators'])} | {_f(p['value'])} | {p['items']} |" for p in figs["cohenKappa"]["pairs"]),
        "",
        "## Annotators",
        "",
        "| annotator | annotations | gold accuracy | gold items | excluded |",
        "|---|---|---|---|---|",
        *(f"| {a['name']} | {a['annotations']} | {_f(a['goldAccuracy'])} | {a['goldItems'] if a['goldItems'] is not None else 'n/a'} | "
          f"{('yes: ' + a['reason']) if a['excluded'] else 'no'} |" for a in card["annotators"]),
        "",
    ]
    if card.get("gold"):
        lines += [f"Gold set: {card['gold']['uri']} (`{card['gold']['digest']}`), {card['gold']['items']} items.", ""]
    queue = card["reviewQueue"]
    lines += [
        "## Output",
        "",
        f"- Labelled items: {adj['labelled']} ({', '.join(f'{k}: {v}' for k, v in card['labelCounts'].items())})",
        f"- Review queue: {queue['items']} items ({adj['ties']} tie(s), {adj['lowConfidence']} below minConfidence "
        f"{adj['minConfidence'] if adj.get('minConfidence') is not None else 'unset'}), most uncertain first: {queue['uri']}",
        *(f"- {name}: {ref['uri']} ({ref['rows']} rows, `{ref['digest']}`)" for name, ref in card["splits"].items()),
        "",
        "## Annotation files",
        "",
        *(f"- {a['uri']} ({a['format']}, `{a['digest']}`)" for a in card["annotationFiles"]),
        "",
    ]
    return "\n".join(lines)
