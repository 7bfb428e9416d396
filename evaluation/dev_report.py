"""The dev-set report (evaluation.dev): markdown tables, the JSON of every answer, a bar chart.

A report is a dict: ``config`` (command, date, machine, settings), ``systems`` (name, kind, model),
``summary`` (system -> evaluation.dev_score.grouped(...)) and ``records`` (every scored answer).
All three files are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
from pathlib import Path

from retnet.io import atomic_write, atomic_write_text

from .dev_score import fmt

EXAMPLES = 6  # answered questions shown side by side in the markdown
_DEFINITIONS = """\
- recall@k: a retrieved passage contains every key phrase of the question (for `multi` questions: each
  key phrase in some retrieved passage); right doc@k: every document holding the answer is among the
  retrieved passages' documents. Over answerable questions; closed book retrieves nothing.
- key-phrase hit: the answer contains every key phrase; F1: SQuAD token F1 against the best reference
  answer. Both over answerable questions; matching ignores case and whitespace runs
  (`evaluation.devset.normalise`).
- refusal: share of unanswerable questions declined; false refusal: share of answerable ones declined.
  An answer declines when it is empty or says so (`evaluation.dev_score.is_refusal`).
- TTFT: seconds from the question to the first answer token, retrieval included (the app's
  `Answer.timings`); for the baseline, to its finished answer. tokens/s: generated tokens per second
  of decoding."""


def _retrieving(report: dict) -> list[str]:
    """Systems whose retrieval is shown: each reader, else the baseline."""
    names = [s["name"] for s in report["systems"] if s["kind"] == "reader"]
    return names or [s["name"] for s in report["systems"] if s["kind"] == "baseline"]


def overall_table(report: dict) -> list[str]:
    k = report["config"]["k"]
    lines = [f"| system | recall@{k} | right doc@{k} | key-phrase hit | F1 | refusal (unanswerable) | "
             "false refusal | TTFT s (mean / median) | tokens/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in report["systems"]:
        o = report["summary"][s["name"]]["overall"]
        lines.append(f"| {s['name']} | {fmt(o['recall'])} | {fmt(o['doc_recall'])} | {fmt(o['hit'])} | "
                     f"{fmt(o['f1'])} | {fmt(o['refusal'])} | {fmt(o['false_refusal'])} | "
                     f"{fmt(o['ttft_s'], 3)} / {fmt(o['ttft_median_s'], 3)} | {fmt(o['tokens_per_s'], 1)} |")
    return lines


def group_table(report: dict, part: str, head: str) -> list[str]:
    """Rows: the groups of ``part`` ("types" or "turns"); retrieval columns, then per system
    key-phrase hit / F1 / refused (refusal rate on the unanswerable row, false refusal elsewhere)."""
    k = report["config"]["k"]
    names = [s["name"] for s in report["systems"]]
    retr = _retrieving(report)
    groups = list(next(iter(report["summary"].values()))[part]) if report["summary"] else []
    cols = [f"recall@{k} ({r})" for r in retr] + [f"{n}: hit / F1 / refused" for n in names]
    lines = [f"| {head} | n | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for g in groups:
        n = max(report["summary"][name][part].get(g, {}).get("n", 0) for name in names)
        cells = [fmt(report["summary"][r][part].get(g, {}).get("recall")) for r in retr]
        for name in names:
            s = report["summary"][name][part].get(g)
            if s is None:
                cells.append("-")
                continue
            refused = s["refusal"] if s["n_answerable"] == 0 else s["false_refusal"]
            cells.append(f"{fmt(s['hit'])} / {fmt(s['f1'])} / {fmt(refused)}")
        lines.append(f"| {g} | {n} | " + " | ".join(cells) + " |")
    return lines


def _cell(text: str, width: int = 140) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."


def examples_table(report: dict) -> list[str]:
    """The first few answerable questions with every system's answer."""
    names = [s["name"] for s in report["systems"]]
    by = {(r["system"], r["id"]): r for r in report["records"]}
    ids = []
    for r in report["records"]:
        if r["answerable"] and r["id"] not in ids:
            ids.append(r["id"])
    lines = ["| question | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for qid in ids[:EXAMPLES]:
        q = next(by[(n, qid)] for n in names if (n, qid) in by)
        cells = []
        for n in names:
            r = by.get((n, qid))
            cells.append("-" if r is None else f"{'HIT ' if r['hit'] else ''}{_cell(r['answer']) or '(empty)'}")
        lines.append(f"| {qid} ({q['type']}): {_cell(q['question'], 80)} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    c = report["config"]
    systems = "; ".join(f"{s['name']}" + (f" = `{s['model']}` from `{s['model_dir']}`" if s["model"] else "")
                        for s in report["systems"])
    sample = (f" (a fixed sample, `--limit {c['limit']}` seed {c['seed']}, of the {c['questions_in_devset']})"
              if c["limit"] else "")
    out = ["# Dev-set evaluation: natural questions over unseen documents", "",
           f"Measured {c['date']} on {c['machine']}.", "",
           f"Command: `{c['command']}` ({c['seconds'] / 60:.1f} min).", "",
           f"{c['questions']} questions{sample} from `{c['devset']}` over {c['documents']} documents "
           f"({c['passages']} passages, embedder `{c['embedder']}`), k = {c['k']} passages per turn, "
           f"{c.get('answers', 'grounded')} answers, greedy decoding, at most {c['max_new_tokens']} new tokens. "
           f"Systems: {systems}.", ""]
    if c.get("note"):
        out += [c["note"], ""]
    out += ["## Overall", "", *overall_table(report), "",
            "## By question type", "", *group_table(report, "types", "type"), "",
            "## By conversation turn", "", *group_table(report, "turns", "turn"), "",
            "## Examples", "", *examples_table(report), "",
            "## Definitions", "", _DEFINITIONS, ""]
    return "\n".join(out)


def plot(report: dict, path: Path) -> None:
    """Bars per system: key-phrase hit, F1 and recall@k, overall, per answerable question type and per
    conversation turn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [s["name"] for s in report["systems"]]
    summary = report["summary"]
    first = next(iter(summary.values())) if summary else {"types": {}, "turns": {}}
    types = [t for t in first["types"] if t != "unanswerable"]
    turns = [t for t in first["turns"] if t != "single"]
    groups = ["overall", *types, *turns]
    k = report["config"]["k"]
    panels = (("hit", "key-phrase hit"), ("f1", "token F1"), ("recall", f"retrieval recall@{k}"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 1.3 * len(groups) * max(1, len(names)) / 2), 9),
                             sharex=True)
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(names))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for i, name in enumerate(names):
            s = summary[name]
            vals = [(s["overall"] if g == "overall" else s["types"].get(g) or s["turns"].get(g, {})).get(metric)
                    for g in groups]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, [v if v is not None else 0 for v in vals], width,
                   label=name)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=min(3, len(names)))
    axes[-1].set_xticks(x, groups)
    axes[0].set_title(f"Dev set ({report['config']['questions']} questions, embedder {report['config']['embedder']})")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def write_outputs(report: dict, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    md, js, png = (out_dir / f"{stem}.{ext}" for ext in ("md", "json", "png"))
    atomic_write_text(md, markdown(report))
    atomic_write_text(js, json.dumps(report, indent=1) + "\n")
    plot(report, png)
    return [md, js, png]
