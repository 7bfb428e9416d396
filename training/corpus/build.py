"""Build the English text corpus from Debian documentation packages.

Steps: ``apt-get download`` the packages of :mod:`training.corpus.sources` into ``data/build/debs``
(no installation), unpack each with ``dpkg-deb -x`` into ``data/build/root/<package>``, extract
documents (HTML, manual pages rendered with the downloaded mandoc, info manuals, Perl POD via
pod2text, dictd dictionaries, WordNet), clean, deduplicate (exact documents, then normalised
paragraphs), split by document (deterministic hash of the document's split key) and write
``data/build/corpus/{train,eval}.jsonl.gz`` plus ``stats.json`` and ``training/corpus/SOURCES.md``.

Run from the repository root::

    python -m training.corpus.build            # everything
    python -m training.corpus.build --help
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from . import extract as ex
from .sources import SOURCES, Source, all_packages
from .text import normalize_text, para_key, paragraphs, split_of, stable_hash, word_count

log = logging.getLogger("training.corpus.build")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUILD = REPO / "data" / "build"


# --------------------------------------------------------------------------- download / unpack

def download(packages: list[str], debs: Path) -> dict[str, Path]:
    debs.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_")[0]: p for p in debs.glob("*.deb")}
    missing = [p for p in packages if p not in have]
    if missing:
        log.info("apt-get download %s", " ".join(missing))
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
        have = {p.name.split("_")[0]: p for p in debs.glob("*.deb")}
    return {p: have[p] for p in packages}


def unpack(debs: dict[str, Path], root: Path) -> dict[str, str]:
    versions = {}
    for pkg, deb in debs.items():
        dest = root / pkg
        stamp = dest / ".unpacked"
        if not stamp.exists() or stamp.read_text() != deb.name:
            subprocess.run(["rm", "-rf", str(dest)], check=True)
            dest.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
            stamp.write_text(deb.name)
        versions[pkg] = deb.name.split("_")[1].replace("%3a", ":")
    return versions


def copyright_licences(pkg_root: Path, pkg: str) -> list[str]:
    """Licence short names from a machine-readable debian/copyright (empty if free-form)."""
    d = pkg_root / "usr" / "share" / "doc" / pkg
    f = d / "copyright"
    if not f.exists():
        cands = list((pkg_root / "usr" / "share" / "doc").glob("*/copyright"))
        if not cands:
            return []
        f = cands[0]
    names = []
    for ln in f.read_text("utf-8", "replace").split("\n"):
        m = re.match(r"^License:\s*(\S.*)$", ln)
        if m and len(m.group(1)) < 60 and len(m.group(1).split()) <= 8:
            names.append(m.group(1).strip())
    return sorted(set(names))


# --------------------------------------------------------------------------- extraction tasks

def _tasks(src: Source, root: Path, mandoc: str) -> list[tuple]:
    pr = root / src.package
    tasks = []
    if src.html:
        for f in ex.walk_files(pr, src.html):
            rel = ex.rel_id(f, pr)
            if any(x in "/" + rel for x in src.html_exclude):
                continue
            tasks.append(("html", src.package, src.licence, str(f), f"{src.package}/{rel}", src.html_main,
                          src.html_api and "/library/" in rel))
    if src.man:
        for f in ex.walk_files(pr, ["usr/share/man/man[1-8]/*"]):
            tasks.append(("man", src.package, src.licence, str(f), mandoc))
    for manual, globs in src.info.items():
        files = []
        for g in globs:
            fs = ex.walk_files(pr, [g])
            # the main file first (it may be only an indirect table), then the numbered parts
            fs.sort(key=lambda p: (len(p.name), p.name))
            files.extend(fs)
        if files:
            tasks.append(("info", src.package, src.licence, [str(x) for x in files], manual))
    for f in ex.walk_files(pr, src.pod):
        if any(x in f.name for x in src.pod_exclude):
            continue
        tasks.append(("pod", src.package, src.licence, str(f)))
    if src.dictd:
        tasks.append(("dictd", src.package, src.licence, str(pr / "usr/share/dictd"), src.dictd))
    if src.wordnet:
        tasks.append(("wordnet", src.package, src.licence, str(pr / "usr/share/wordnet")))
    return tasks


def _run_task(task: tuple) -> list[dict]:
    kind = task[0]
    try:
        if kind == "html":
            _, pkg, lic, f, did, main, api = task
            d = ex.html_to_doc(Path(f), pkg, did, lic, main, api)
            return [d] if d else []
        if kind == "man":
            _, pkg, lic, f, mandoc = task
            p = Path(f)
            name = p.name[:-3] if p.name.endswith(".gz") else p.name
            page, _, sec = name.rpartition(".")
            rendered = ex.render_man(p, mandoc)
            if not rendered:
                return []
            d = ex.parse_man(rendered, page, pkg, lic, f"{pkg}/man/{page}.{sec}")
            return [d] if d else []
        if kind == "info":
            _, pkg, lic, files, manual = task
            return ex.info_docs([Path(x) for x in files], pkg, lic, manual)
        if kind == "pod":
            _, pkg, lic, f = task
            d = ex.pod_doc(Path(f), pkg, lic)
            return [d] if d else []
        if kind == "dictd":
            _, pkg, lic, d, name = task
            pairs = ex.read_dictd(Path(d) / f"{name}.index", Path(d) / f"{name}.dict.dz")
            return ex.dict_docs(name, pairs, pkg, lic)
        if kind == "wordnet":
            _, pkg, lic, d = task
            return ex.wordnet_docs(Path(d), pkg, lic)
    except Exception as e:  # one bad file must not stop the build
        logging.getLogger("training.corpus.build").warning("task %s failed: %r", task[:4], e)
    return []


# --------------------------------------------------------------------------- cleaning / dedup / split

_BOILERPLATE = [
    re.compile(r"^(Copyright|©)\s.*(All rights reserved|Python Software Foundation|PostgreSQL Global)", re.I),
    re.compile(r"^(Previous|Next|Up|Home|Prev)(\s*[|:]\s*(Previous|Next|Up|Home|Prev))*\s*$"),
    re.compile(r"^(Table of Contents|Contents)$"),
    re.compile(r"^Submit and view feedback for"),
    re.compile(r"^This page is licensed under the Python Software Foundation License"),
    re.compile(r"^Last updated on "),
    re.compile(r"^Found a bug\?"),
    re.compile(r"^Download the ebook$"),
]


def clean_doc(doc: dict) -> dict | None:
    pars = []
    for p in paragraphs(normalize_text(doc["text"])):
        if any(rx.search(p) for rx in _BOILERPLATE):
            continue
        pars.append(p)
    text = "\n\n".join(pars)
    if word_count(text) < 4:
        return None
    doc = dict(doc)
    doc["text"] = text
    doc["title"] = " ".join(str(doc["title"]).split())[:200]
    return doc


def dedup_docs(docs: list[dict], min_par_words: int = 8, drop_ratio: float = 0.5) -> tuple[list[dict], dict]:
    """Exact duplicates (normalised text) are dropped, then paragraphs (>= ``min_par_words`` words)
    whose normalised form was already seen in an earlier document are removed; a document that
    loses more than ``drop_ratio`` of its words that way is dropped whole. ``docs`` must already be
    in priority order (eval documents first, so that train never repeats eval text)."""
    seen_docs: set[int] = set()
    seen_pars: set[int] = set()
    out = []
    stats = Counter()
    for d in docs:
        key = stable_hash(para_key(d["text"]))
        if key in seen_docs:
            stats["exact_duplicate_docs"] += 1
            continue
        seen_docs.add(key)
        pars = paragraphs(d["text"])
        keep = []
        removed_words = 0
        total_words = 0
        new_keys = []
        for p in pars:
            n = word_count(p)
            total_words += n
            if n >= min_par_words:
                pk = stable_hash(para_key(p))
                if pk in seen_pars:
                    removed_words += n
                    stats["duplicate_paragraphs"] += 1
                    continue
                new_keys.append(pk)
            keep.append(p)
        if total_words and removed_words / total_words > drop_ratio:
            stats["near_duplicate_docs"] += 1
            continue
        seen_pars.update(new_keys)
        if removed_words:
            d = dict(d)
            d["text"] = "\n\n".join(keep)
        out.append(d)
    return out, dict(stats)


def verify_qa(doc: dict) -> list[dict]:
    """Keep QA candidates whose answer and anchor occur in the (cleaned) text. A question asked
    twice with different answers (a repeated section heading, an option listed in a summary and
    described again) is ambiguous and dropped altogether."""
    text = doc["text"]
    low = text.lower()
    answers: dict[str, set[str]] = defaultdict(set)
    for q in doc.get("qa", []):
        answers[q["question"]].add(q["answer"])
    out = []
    seen = set()
    for q in doc.get("qa", []):
        if q["question"] in seen or len(answers[q["question"]]) > 1:
            continue
        if q["answer"] in text and q["anchor"].lower() in low:
            seen.add(q["question"])
            out.append(q)
    return out


def assign_splits(docs: list[dict], eval_fraction: float) -> None:
    for d in docs:
        d["split"] = split_of(d["split_key"], eval_fraction)


# --------------------------------------------------------------------------- SOURCES.md

def write_sources_md(path: Path, stats: dict, versions: dict, dep5: dict, elapsed: float) -> None:
    rows = []
    tot = Counter()
    for src in SOURCES:
        s = stats["packages"].get(src.package, {})
        rows.append(
            f"| {src.package} | {versions.get(src.package, '?')} | {s.get('docs', 0):,} | "
            f"{s.get('words', 0):,} | {s.get('bytes', 0) / 1e6:.2f} | {s.get('eval_docs', 0):,} | {src.licence} | "
            f"{', '.join(dep5.get(src.package, [])) or '(free-form copyright file)'} |")
        for k in ("docs", "words", "bytes", "eval_docs"):
            tot[k] += s.get(k, 0)
    lines = [
        "# Corpus sources",
        "",
        "Generated by `python -m training.corpus.build` (do not edit by hand). All packages are from",
        "Debian 12 (bookworm) *main*, i.e. DFSG-free; nothing non-free is used. The licence column is",
        "our summary of each package's `/usr/share/doc/<package>/copyright` for the text taken; the last",
        "column lists the `License:` names of machine-readable copyright files. Sizes are after cleaning",
        "and deduplication (bytes = UTF-8 text).",
        "",
        "| package | version | docs | words | MB | eval docs | licence (summary) | copyright file licences |",
        "|---|---|---:|---:|---:|---:|---|---|",
        *rows,
        f"| **total** | | {tot['docs']:,} | {tot['words']:,} | {tot['bytes'] / 1e6:.2f} | {tot['eval_docs']:,} | | |",
        "",
        "## Splits",
        "",
        "| split | docs | words | MB |",
        "|---|---:|---:|---:|",
    ]
    for sp in ("train", "eval"):
        s = stats["splits"][sp]
        lines.append(f"| {sp} | {s['docs']:,} | {s['words']:,} | {s['bytes'] / 1e6:.2f} |")
    lines += [
        "",
        "## Deduplication",
        "",
        *[f"- {k.replace('_', ' ')}: {v:,}" for k, v in sorted(stats["dedup"].items())],
        "",
        "## Candidate QA items found in the documents (before episode building)",
        "",
        *[f"- {k}: {v:,}" for k, v in sorted(stats["qa"].items())],
        "",
        f"Build time: {elapsed / 60:.1f} min on {os.cpu_count()} CPU cores.",
        "",
    ]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.corpus.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD)
    ap.add_argument("--eval-fraction", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--packages", nargs="*", help="only these source packages (default: all)")
    ap.add_argument("--no-download", action="store_true", help="use the .deb files already in build-dir/debs")
    ap.add_argument("--sources-md", type=Path, default=REPO / "training" / "corpus" / "SOURCES.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    build = args.build_dir
    sources = [s for s in SOURCES if not args.packages or s.package in args.packages]
    pkgs = all_packages() if not args.packages else [s.package for s in sources] + ["mandoc"]
    if args.no_download:
        debs = {p.name.split("_")[0]: p for p in (build / "debs").glob("*.deb")}
        debs = {k: v for k, v in debs.items() if k in pkgs}
    else:
        debs = download(pkgs, build / "debs")
    versions = unpack(debs, build / "root")
    dep5 = {p: copyright_licences(build / "root" / p, p) for p in debs}
    mandoc = ex.find_mandoc(build / "root")
    log.info("unpacked %d packages in %.0fs", len(debs), time.time() - t0)

    tasks = []
    for src in sources:
        tasks.extend(_tasks(src, build / "root", mandoc))
    # big single tasks first so that the pool stays busy
    tasks.sort(key=lambda t: 0 if t[0] in ("dictd", "wordnet", "info") else 1)
    docs: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for res in tqdm(pool.map(_run_task, tasks, chunksize=4), total=len(tasks), desc="extract", mininterval=5):
            docs.extend(res)
    log.info("extracted %d documents from %d tasks in %.0fs", len(docs), len(tasks), time.time() - t0)

    docs = [c for c in (clean_doc(d) for d in docs) if c is not None]
    assign_splits(docs, args.eval_fraction)
    # eval first (train never repeats eval text), then source order, then id
    order = {s.package: i for i, s in enumerate(SOURCES)}
    docs.sort(key=lambda d: (d["split"] != "eval", order.get(d["source_package"], 99), d["id"]))
    docs, dstats = dedup_docs(docs)
    log.info("after dedup: %d documents (%s)", len(docs), dstats)

    out_dir = build / "corpus"
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {"packages": defaultdict(Counter), "splits": {sp: Counter() for sp in ("train", "eval")},
             "dedup": dstats, "qa": Counter()}
    files = {sp: gzip.open(out_dir / f"{sp}.jsonl.gz", "wt", encoding="utf-8", compresslevel=6)
             for sp in ("train", "eval")}
    ids = set()
    for d in docs:
        if d["id"] in ids:
            d["id"] = f"{d['id']}#{stable_hash(d['text']) % 10**8}"
        ids.add(d["id"])
        d["qa"] = verify_qa(d)
        rec = {k: d[k] for k in ("id", "source_package", "title", "text", "licence", "split", "split_key",
                                 "format", "qa")}
        files[d["split"]].write(json.dumps(rec, ensure_ascii=False) + "\n")
        n_w, n_b = word_count(d["text"]), len(d["text"].encode("utf-8"))
        ps = stats["packages"][d["source_package"]]
        ps["docs"] += 1
        ps["words"] += n_w
        ps["bytes"] += n_b
        if d["split"] == "eval":
            ps["eval_docs"] += 1
        ss = stats["splits"][d["split"]]
        ss["docs"] += 1
        ss["words"] += n_w
        ss["bytes"] += n_b
        for q in d["qa"]:
            stats["qa"][f"{q['kind']} ({d['split']})"] += 1
    for f in files.values():
        f.close()
    elapsed = time.time() - t0
    stats["elapsed_s"] = elapsed
    stats["versions"] = versions
    stats["copyright_licences"] = dep5
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, default=dict))
    if not args.packages:
        write_sources_md(args.sources_md, stats, versions, dep5, elapsed)
    log.info("wrote %s in %.1f min: %s", out_dir, elapsed / 60,
             {sp: dict(v) for sp, v in stats["splits"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
