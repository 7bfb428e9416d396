"""The evaluation report: targets met or missed, markdown tables (models side by side), a two-panel plot.

A report is a plain dict (also the JSON file)::

    {"config": {...}, "models": [{"name", "dir", "model_type", ...}],
     "results": {setting: {label: {"x", "layout", "models": {model name: summary}}}},
     "targets": [...]}

where a summary comes from evaluation.score.summarize.

Reports of separate runs with the same settings (models evaluated in parallel processes or on
different machines) merge into one side-by-side report::

    python -m evaluation.report retnet=a.json transformer=b.json --markdown eval.md --json eval.json --plot eval.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from retnet.io import atomic_write_text

MAIN_DISTRACTORS = "4"
TARGETS = (
    {"name": "token F1 with 4 distractors", "setting": "distractors", "label": MAIN_DISTRACTORS, "metric": "f1",
     "op": ">=", "threshold": 0.6},
    {"name": "closed-book token F1", "setting": "closed-book", "label": "closed-book", "metric": "f1", "op": "<=",
     "threshold": 0.15},
)
TITLES = {
    "layouts": "Prompt layout (each episode's own passages: gold + 1-16 distractors)",
    "closed-book": "Closed book (no passages): answers must come from the state, not the weights",
    "distractors": "Number of distractors (gold + exactly N)",
    "mqar": "MQAR-style recall (N synthetic key-value facts, one asked)",
}
RUN_ONLY = ("seconds", "device")  # config entries that may differ between runs that merge
ROW_HEADS = {"layouts": "layout", "closed-book": "episodes", "distractors": "distractors", "mqar": "key-value pairs"}


def check_targets(results: dict, model_names: list[str]) -> list[dict]:
    """Each target with, per model, the measured value and whether it is met (None: not measured)."""
    out = []
    for t in TARGETS:
        point = results.get(t["setting"], {}).get(t["label"])
        values = {}
        for name in model_names:
            s = (point or {}).get("models", {}).get(name)
            v = None if s is None or not s["n"] else s[t["metric"]]
            met = None if v is None else (v >= t["threshold"] if t["op"] == ">=" else v <= t["threshold"])
            values[name] = {"value": v, "met": met}
        out.append({**t, "values": values})
    return out


def _em_f1(s: dict | None) -> str:
    if s is None or not s["n"]:
        return "-"
    return f"{s['em']:.3f} / {s['f1']:.3f}"


def _header(first: str, names: list[str], what: str = "EM / F1") -> list[str]:
    return [f"| {first} | n | " + " | ".join(f"{n} {what}" for n in names) + " |",
            "|---|---:|" + "---:|" * len(names)]


def _n(point: dict) -> int:
    return max((s["n"] for s in point["models"].values()), default=0)


def setting_table(setting: str, points: dict, names: list[str]) -> list[str]:
    lines = _header(ROW_HEADS.get(setting, setting), names)
    for label, point in points.items():
        models = point["models"]
        lines.append(f"| {label} | {_n(point)} | " + " | ".join(_em_f1(models.get(n)) for n in names) + " |")
        if setting == "closed-book":  # the episodes whose answers cannot be guessed, and the rest
            groups = sorted({g for s in models.values() for g in s.get("groups", {})})
            for g in groups:
                subs = [models.get(n, {}).get("groups", {}).get(g) for n in names]
                n = max((s["n"] for s in subs if s), default=0)
                lines.append(f"| {g} | {n} | " + " | ".join(_em_f1(s) for s in subs) + " |")
    if setting == "layouts" and len(points) > 1:
        best = {n: max((lb for lb in points if n in points[lb]["models"] and points[lb]["models"][n]["n"]),
                       key=lambda lb, n=n: points[lb]["models"][n]["f1"], default=None) for n in names}
        lines += ["", "Best layout by token F1: " + ", ".join(f"{n}: {b}" for n, b in best.items() if b) + "."]
    return lines


def main_point(report: dict) -> tuple[str, dict] | None:
    """The setting whose per-kind scores are shown: 4 distractors, else the layout used elsewhere."""
    results = report["results"]
    if MAIN_DISTRACTORS in results.get("distractors", {}):
        return f"{MAIN_DISTRACTORS} distractors, layout {report['config']['layout']}", \
            results["distractors"][MAIN_DISTRACTORS]
    layout = report["config"]["layout"]
    if layout in results.get("layouts", {}):
        return f"own passages, layout {layout}", results["layouts"][layout]
    return None


def kinds_table(point: dict, names: list[str]) -> list[str]:
    models = point["models"]
    kinds = sorted({k for s in models.values() for k in s["kinds"]})
    lines = ["| kind | n | " + " | ".join(f"{n} F1" for n in names) + " |", "|---|---:|" + "---:|" * len(names)]
    for k in kinds:
        n = max(s["kinds"].get(k, {}).get("n", 0) for s in models.values())
        cells = [f"{models[m]['kinds'][k]['f1']:.3f}" if m in models and k in models[m]["kinds"] else "-"
                 for m in names]
        lines.append(f"| {k} | {n} | " + " | ".join(cells) + " |")
    return lines


def cost_table(results: dict, names: list[str]) -> list[str]:
    lines = ["| setting | point | " + " | ".join(f"{n} tokens / s" for n in names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for setting, points in results.items():
        for label, point in points.items():
            cells = []
            for n in names:
                s = point["models"].get(n)
                ok = s is not None and s["n"]
                cells.append(f"{s['prompt_tokens']:.0f} / {s['seconds_per_answer']:.3f}" if ok else "-")
            lines.append(f"| {setting} | {label} | " + " | ".join(cells) + " |")
    return lines


def targets_table(targets: list[dict], names: list[str]) -> list[str]:
    lines = ["| target | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for t in targets:
        cells = []
        for n in names:
            v = t["values"][n]
            cells.append("not run" if v["value"] is None else f"{v['value']:.3f} {'met' if v['met'] else 'missed'}")
        lines.append(f"| {t['name']} {t['op']} {t['threshold']} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    cfg, names = report["config"], [m["name"] for m in report["models"]]
    out = ["# Reader evaluation", "",
           f"{cfg['n_episodes']} held-out episodes from `{cfg['episodes']}` (seed {cfg['seed']}), passages ranked by "
           f"`{cfg['rank']}` + lexical re-ranking, layout `{cfg['layout']}` outside the layout table, greedy "
           f"decoding, at most {cfg['max_new_tokens']} new tokens. Models: "
           + ", ".join(f"{m['name']} (`{m['dir']}`, {m['model_type']})" for m in report["models"]) + ".", ""]
    if "distractors" in report["results"]:
        out += [f"Distractor pool: {cfg.get('pool')}; episodes left out (too few distractors): "
                f"{len(cfg.get('distractors_dropped', []))}.", ""]
    out += ["## Targets", "", *targets_table(report["targets"], names), ""]
    for setting, points in report["results"].items():
        out += [f"## {TITLES.get(setting, setting)}", "", *setting_table(setting, points, names), ""]
    main = main_point(report)
    if main is not None:
        out += [f"## Token F1 by kind ({main[0]})", "", *kinds_table(main[1], names), ""]
    out += ["## Prompt tokens and seconds per answer", "", *cost_table(report["results"], names), ""]
    return "\n".join(out)


def plot(report: dict, path: Path) -> None:
    """Two panels, one line per model: F1 against the number of distractors, MQAR accuracy (exact
    match) against the number of key-value pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m["name"] for m in report["models"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("distractors", "f1", "distractors (gold + N)", "token F1"),
              ("mqar", "em", "key-value pairs in the state", "exact match"))
    for ax, (setting, metric, xlabel, ylabel) in zip(axes, panels, strict=True):
        points = report["results"].get(setting, {})
        for name in names:
            xy = sorted((p["x"], p["models"][name][metric]) for p in points.values()
                        if name in p["models"] and p["models"][name]["n"] and not math.isnan(p["models"][name][metric]))
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=name)
        if setting == "distractors":
            for t in report["targets"]:
                if t["setting"] == "distractors":
                    ax.axhline(t["threshold"], color="grey", linestyle="--", linewidth=1,
                               label=f"target {t['threshold']}")
        if not points:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
        else:
            xs = sorted({p["x"] for p in points.values()})
            if xs[0] > 0:
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.legend()
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("Reading with distractors")
    axes[1].set_title("MQAR recall")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: dict, markdown_path: Path | None, json_path: Path | None, plot_path: Path | None) -> None:
    """Print the markdown tables; write them, the JSON report and the plot where asked (atomically)."""
    text = markdown(report)
    print(text)
    if markdown_path:
        atomic_write_text(markdown_path, text + "\n")
    if json_path:
        atomic_write_text(json_path, json.dumps(report, indent=1))
    if plot_path:
        plot(report, plot_path)


def merge_reports(reports: list[dict], names: list[str | None] | None = None) -> dict:
    """One side-by-side report from reports of single runs made with the same settings.

    ``names[i]`` (optional) renames the one model of ``reports[i]``. Raises ValueError when the
    settings differ (other episodes, seed, limit, layout...) or two models share a name."""
    if not reports:
        raise ValueError("nothing to merge")
    names = names or [None] * len(reports)

    def settings(report: dict) -> dict:  # what decides the items and the answers (not time or hardware)
        return {k: v for k, v in report["config"].items() if k not in RUN_ONLY}

    first = settings(reports[0])
    config = first | {k: sorted({str(r["config"].get(k)) for r in reports}) for k in RUN_ONLY}
    merged = {"config": config, "models": [], "results": {}}
    for i, (report, name) in enumerate(zip(reports, names, strict=True)):
        own = settings(report)
        if own != first:
            diff = sorted(k for k in own.keys() | first.keys() if own.get(k) != first.get(k))
            raise ValueError(f"report {i + 1} was made with other settings ({', '.join(diff)}); "
                             "only runs of the same evaluation can be merged")
        rename = {}
        if name is not None:
            if len(report["models"]) != 1:
                raise ValueError(f"report {i + 1} holds {len(report['models'])} models; a new name needs exactly one")
            rename = {report["models"][0]["name"]: name}
        for model in report["models"]:
            model = {**model, "name": rename.get(model["name"], model["name"])}
            if any(m["name"] == model["name"] for m in merged["models"]):
                raise ValueError(f"two models are named {model['name']!r}: rename one (NAME=report.json)")
            merged["models"].append(model)
        for setting, points in report["results"].items():
            for label, point in points.items():
                target = merged["results"].setdefault(setting, {}).setdefault(
                    label, {k: v for k, v in point.items() if k != "models"} | {"models": {}})
                for model_name, summary in point["models"].items():
                    target["models"][rename.get(model_name, model_name)] = summary
    merged["targets"] = check_targets(merged["results"], [m["name"] for m in merged["models"]])
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Merge reader-evaluation reports (evaluation.evaluate --json) "
                                             "side by side.")
    ap.add_argument("reports", nargs="+", help="report JSON files, each optionally NAME=FILE to rename its one model")
    ap.add_argument("--json", type=Path, help="write the merged report here")
    ap.add_argument("--markdown", type=Path, help="write the markdown tables here")
    ap.add_argument("--plot", type=Path, help="write the two-panel plot here")
    args = ap.parse_args(argv)
    reports, names = [], []
    for spec in args.reports:
        name, _, path = spec.rpartition("=") if "=" in spec else (None, "", spec)
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            ap.error(f"cannot read report {path}: {e}")
        names.append(name or None)
    try:
        merged = merge_reports(reports, names)
    except ValueError as e:
        ap.error(str(e))
    write_outputs(merged, args.markdown, args.json, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
