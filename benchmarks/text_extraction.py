"""Text extraction quality and speed: HTML main content (ours vs trafilatura) and PDF clean-up.

HTML: documentation sites installed on this machine (Node.js API docs, npm's command docs,
the Rust book (mdBook), rustdoc pages, the Valgrind manual (DocBook), libxslt's API docs
(gtk-doc)), up to 25 pages each. Every page of a site shares its template (navigation,
sidebars, footers), so without hand labels:

- "template" lines are lines of a page's full visible text that recur on at least half the
  pages of its site and sit (median place) in its first or last fifth; **chrome kept** =
  characters of an extractor's output on template lines / characters of template lines in
  the full text (lower is better);
- "own" lines are lines of at least 20 letters and digits found on one page only;
  **content kept** = characters of own lines found in the extractor's output / all of them
  (higher is better; lines compared as lowercase letters and digits, so list bullets and
  table bars do not matter).

PDF: the documents' pages through ``retrieval.pdf_text.clean_pages``, counting what each step
changed and its cost next to pypdf's own extraction.

    python benchmarks/text_extraction.py [--trafilatura-path DIR] [--pdf FILE ...]
    python benchmarks/text_extraction.py --site-docs DIR   # the dev set as a crawled site (see site_docs)

(trafilatura is optional: installed, or in DIR, e.g. ``pip install --target DIR trafilatura``.)
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
import time
from collections import Counter
from pathlib import Path

from retrieval.html import html_to_text

RUST = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html"
SITES = {
    "Node.js API": "/usr/share/doc/nodejs/api/*.html",
    "npm commands": "/usr/lib/node_modules/npm/docs/output/commands/*.html",
    "Rust book (mdBook)": f"{RUST}/book/ch*.html",
    "rustdoc (std::collections)": f"{RUST}/std/collections/*.html",
    "Valgrind (DocBook)": "/usr/share/doc/valgrind/html/*.html",
    "libxslt (gtk-doc)": "/usr/share/doc/libxslt1-dev/html/html/*.html",
}
PAGES_PER_SITE = 25
EDGE = 0.2  # chrome lines sit (median place) in the first or last fifth of the page's text
_ALNUM = re.compile(r"[^0-9a-z]+")


def norm(line: str) -> str:
    return _ALNUM.sub("", line.lower())


def extractors(trafilatura_path: str | None) -> dict:
    out = {
        "all visible text (before)": lambda m: html_to_text(m, main_content=False)[0],
        "ours, main content (after)": lambda m: html_to_text(m)[0],
    }
    if trafilatura_path:
        sys.path.insert(0, trafilatura_path)
    try:
        import trafilatura
    except ImportError:
        return out
    out[f"trafilatura {trafilatura.__version__}"] = lambda m: trafilatura.extract(m, include_tables=True) or ""
    out["trafilatura, favor_recall"] = lambda m: trafilatura.extract(m, include_tables=True, favor_recall=True) or ""
    return out


def html_site(pattern: str, methods: dict) -> dict | None:
    files = sorted(glob.glob(pattern))[:PAGES_PER_SITE]
    if len(files) < 4:
        return None
    pages = [Path(f).read_text(encoding="utf-8", errors="replace") for f in files]
    full = [[norm(line) for line in html_to_text(m, main_content=False)[0].split("\n")] for m in pages]
    seen = Counter(line for lines in full for line in set(lines) if line)
    # Where each line sits in its page (0 = top, 1 = bottom): chrome is at the edges, while content
    # that merely repeats across pages ("Examples", "Stability: 2 - Stable") sits in the middle.
    places: dict[str, list[float]] = {}
    for lines in full:
        for i, line in enumerate(lines):
            places.setdefault(line, []).append(i / max(1, len(lines) - 1))
    template = {line for line, n in seen.items() if n >= max(3, len(pages) / 2)
                and not EDGE < sorted(places[line])[len(places[line]) // 2] < 1 - EDGE}
    own = [[line for line in set(lines) if len(line) >= 20 and seen[line] == 1] for lines in full]
    template_chars = sum(len(line) for lines in full for line in lines if line in template)
    own_chars = sum(len(line) for lines in own for line in lines)
    row = {"pages": len(pages), "template_chars": template_chars, "own_chars": own_chars}
    for name, fn in methods.items():
        started = time.perf_counter()
        outputs = [fn(m) for m in pages]
        seconds = time.perf_counter() - started
        kept_template = sum(len(n) for out in outputs for line in out.split("\n") if (n := norm(line)) in template)
        kept_own = 0
        for out, lines in zip(outputs, own, strict=True):
            flat = norm(out)
            kept_own += sum(len(line) for line in lines if line in flat)
        row[name] = {
            "chars": sum(len(o) for o in outputs),
            "chrome_kept": kept_template / template_chars if template_chars else float("nan"),
            "content_kept": kept_own / own_chars if own_chars else float("nan"),
            "ms_per_page": 1000 * seconds / len(pages),
        }
    return row


def pdf_report(path: str) -> dict:
    from pypdf import PdfReader

    from retrieval import pdf_text as pt

    reader = PdfReader(path)
    started = time.perf_counter()
    raw = [page.extract_text() for page in reader.pages]
    extract_s = time.perf_counter() - started
    started = time.perf_counter()
    pt.clean_pages(raw)
    clean_s = time.perf_counter() - started
    # The steps one by one, to count what each changed.
    lines = [page.translate(pt._LIGATURES).split("\n") for page in raw]
    before = sum(1 for page in lines for line in page if line.strip())
    pt._drop_running_lines(lines)
    dropped = before - sum(1 for page in lines for line in page if line.strip())
    hyphens = sum(1 for page in lines for line in page if pt._LINE_HYPHEN.search(line.rstrip()))
    vocab = Counter(w.lower() for page in lines for line in page for w in pt._WORD.findall(line)
                    if not pt._mixed_case(w))
    compounds = Counter(w.lower() for page in lines for line in page for w in pt._COMPOUND.findall(line))
    words = sum(vocab.values())
    long_share = sum(n for w, n in vocab.items() if len(w) >= pt._LONG_WORD) / max(1, words)
    lines = [pt._join_hyphenated(page, vocab, compounds) for page in lines]
    hyphens -= sum(1 for page in lines for line in page if pt._LINE_HYPHEN.search(line.rstrip()))
    tokens = sum(len(line.split()) for page in lines for line in page)
    joined = tokens - sum(len(pt._join_split_words(line, vocab).split()) for page in lines for line in page)
    return {
        "file": Path(path).name,
        "pages": len(raw),
        "header_footer_lines": dropped,
        "hyphen_line_ends": hyphens,
        "split_words_joined": joined if long_share <= pt._MAX_LONG_SHARE else 0,
        "joining": "on" if long_share <= pt._MAX_LONG_SHARE else f"off ({100 * long_share:.1f}% words of 16+ letters)",
        "extract_s": extract_s,
        "clean_s": clean_s,
    }


# -- the dev set as a crawled site: the two HTML manuals cut into pages, each in a site's chrome --------

_SECTIONS = ["Introduction", "Invoking", "Editor Basics", "The Help Viewer", "The File Browser", "Command-line Options",
             "Feature Toggles", "Nanorc Files", "Pico Compatibility", "Building and its Options", "Screen Layout",
             "Entering Text", "Commands", "The Cutbuffer", "The Mark", "Search and Replace", "Using the Mouse",
             "Anchors", "Limitations", "Settings", "Syntax Highlighting", "Rebinding Keys",
             "Keyboard shortcuts cheat sheet", "Paste from the clipboard", "Open a file at a given line",
             "Soft wrapping", "Spell checking", "Undo and redo"]


DEV_DOCS = Path(__file__).resolve().parents[1] / "data" / "eval" / "docs"


def site_docs(out: Path, docs: Path = DEV_DOCS) -> int:
    """Write the dev documents to ``out`` with each HTML manual cut at its ``<hr>`` rules into pages,
    every page wrapped in a documentation site's chrome (top links, a sidebar of 28 section links
    whose words overlap the questions, a cookie notice, a copyright footer): half in HTML5 landmarks
    (header/nav/aside/main/footer), half in plain divs with class and id names. Returns the pages."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for f in docs.iterdir():
        if f.suffix != ".html":
            shutil.copy(f, out / f.name)
    top = " ".join(f'<a href="/{w.lower()}">{w}</a>' for w in
                   ["Home", "Download", "Documentation", "FAQ", "Mailing lists", "Report a bug", "Donate", "Search"])
    side = "".join(f'<li><a href="/docs/{i}">{s}</a></li>' for i, s in enumerate(_SECTIONS))
    cookie = ("This site uses cookies to remember your preferences, such as your editor settings and search history, "
              "and to analyse traffic. By continuing to browse you agree to our use of cookies. "
              "<button>Accept</button> <button>Settings</button>")
    foot = ("<p>Copyright &copy; 1999-2026 Free Software Foundation, Inc. Verbatim copying and distribution of this "
            "entire article are permitted in any medium, provided this notice is preserved. Please send broken links, "
            "questions about the editor and other corrections or suggestions to the webmasters.</p>"
            '<p><a href="/privacy">Privacy</a> | <a href="/contact">Contact</a> | <a href="/rss">RSS</a> | '
            '<a href="/edit">Edit this page on GitHub</a></p>')
    n = 0
    for name in ("nano.html", "nano-faq.html"):
        html = (docs / name).read_text(encoding="utf-8")
        body = html[html.index("<body"):]
        body = body[body.index(">") + 1 : body.rindex("</body>")]
        for i, part in enumerate(p for p in re.split(r"<hr[^>]*>", body) if p.strip()):
            found = re.search(r"<h[1-4][^>]*>(.*?)</h[1-4]>", part, re.S)
            title = re.sub(r"<[^>]+>", "", found.group(1)).strip() if found else name
            if n % 2 == 0:
                page = (f'<header><div class="logo">GNU nano</div><nav>{top}</nav></header>'
                        f'<div class="cookie-notice">{cookie}</div><div class="wrap"><aside><h4>Manual</h4>'
                        f"<ul>{side}</ul></aside><main>{part}</main></div><footer>{foot}</footer>")
            else:
                page = (f'<div id="page"><div id="top"><span class="logo">GNU nano</span> {top}</div>'
                        f'<div id="consent">{cookie}</div><div class="col-left"><h4>Manual</h4><ul>{side}</ul></div>'
                        f'<div class="col-main">{part}</div><div id="bottom">{foot}</div></div>')
            (out / f"{Path(name).stem}-{i:02d}.html").write_text(
                f"<!DOCTYPE html><html><head><title>{title} - GNU nano</title></head><body>{page}</body></html>",
                encoding="utf-8")
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trafilatura-path", help="a folder holding trafilatura (pip install --target)")
    ap.add_argument("--pdf", nargs="*", default=[], help="PDF files to clean")
    ap.add_argument("--site-docs", type=Path, help="only write the dev set as a crawled site into this folder")
    args = ap.parse_args(argv)
    if args.site_docs:
        print(f"{site_docs(args.site_docs)} pages written to {args.site_docs}")
        return
    methods = extractors(args.trafilatura_path)
    print("## HTML: chrome kept (lower is better) / content kept (higher is better) / ms per page\n")
    print("| site (pages) | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    totals: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0.0] for name in methods}
    all_template = all_own = 0
    for site, pattern in SITES.items():
        row = html_site(pattern, methods)
        if row is None:
            continue
        cells = []
        for name in methods:
            r = row[name]
            cells.append(f"{r['chrome_kept']:.2f} / {r['content_kept']:.3f} / {r['ms_per_page']:.0f}")
            t = totals[name]
            t[0] += r["chrome_kept"] * row["template_chars"]
            t[1] += r["content_kept"] * row["own_chars"]
            t[2] += r["ms_per_page"] * row["pages"]
            t[3] += row["pages"]
        all_template += row["template_chars"]
        all_own += row["own_chars"]
        print(f"| {site} ({row['pages']}) | " + " | ".join(cells) + " |")
    cells = [f"{t[0] / all_template:.2f} / {t[1] / all_own:.3f} / {t[2] / t[3]:.0f}" for t in totals.values()]
    print("| **all** | " + " | ".join(cells) + " |")
    if args.pdf:
        print("\n## PDF clean-up\n")
        print("| file | pages | header/footer lines removed | line-end hyphens joined | split words joined |"
              " extraction s | clean-up s |")
        print("|---|---|---|---|---|---|---|")
        for path in args.pdf:
            r = pdf_report(path)
            print(f"| {r['file']} | {r['pages']} | {r['header_footer_lines']} | {r['hyphen_line_ends']} | "
                  f"{r['split_words_joined']} ({r['joining']}) | {r['extract_s']:.2f} | {r['clean_s']:.3f} |")


if __name__ == "__main__":
    main()
