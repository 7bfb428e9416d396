"""Extractors: turn the files of an extracted Debian package into documents.

Every extractor returns a list of document dicts::

    {"id", "source_package", "title", "text", "split_key", "format", "qa": [...]}

``qa`` holds candidate question/answer items found while parsing the structure (option
descriptions, API entries, dictionary definitions, section openings). Each item is
``{"kind", "question", "answer", "anchor"}``; ``answer`` and ``anchor`` occur verbatim in
``text`` (checked again after cleaning), the gold passage of an episode is a passage holding both.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import subprocess
from pathlib import Path

from .text import first_sentence, normalize_text, reflow, word_count

log = logging.getLogger(__name__)

MAX_ANSWER_WORDS = 22


def _short_answer(s: str) -> str | None:
    s = " ".join(s.split()).strip()
    if not s:
        return None
    n = len(s.split())
    if n < 2 or n > MAX_ANSWER_WORDS:
        return None
    if s.endswith(("...", "…", ":", ",")) or s.count("(") != s.count(")") or s.count("[") != s.count("]"):
        return None  # cut in the middle of an ellipsis, a list or a bracket
    return s


# --------------------------------------------------------------------------- HTML

_BLOCK_TAGS = [
    "p", "div", "section", "article", "li", "dt", "dd", "pre", "blockquote", "table", "tr",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "br", "hr", "caption", "figure",
]
_DROP_CLASSES = {
    "navheader", "navfooter", "sphinxsidebar", "related", "footer", "headerlink", "nosearch",
    "menu", "toc", "docnav", "breadcrumbs", "searchbox", "sidebar", "navigation", "nav",
    "navbar", "toc-backref", "contents", "topic", "highlight-pycon3", "skip", "version_switcher_placeholder",
}
_DROP_IDS = {"navigation", "toc", "header", "footer", "searchbox", "sidebar", "nav", "menu"}
_PRE_NL = "\u2028"  # stands for a newline inside <pre> while whitespace is normalised


def _heading_text(s: str) -> str:
    s = " ".join(s.replace("¶", " ").split())
    s = re.sub(r"^(?:[A-Z]\.|[\dIVX]+\.)(?:[\d.]*)\s+", "", s)  # "9.4. String Functions" -> ...
    s = re.sub(r"^(?:Chapter|Section|Appendix)\s+[\dA-Z.]+\.?\s*", "", s)
    return s.strip()


def html_to_doc(path: Path, package: str, doc_id: str, licence: str, main_selector: str | None = None,
                api: bool = False) -> dict | None:
    from bs4 import BeautifulSoup

    raw = path.read_bytes()
    soup = BeautifulSoup(raw, "html.parser")
    title = ""
    if soup.title and soup.title.string:
        title = " ".join(soup.title.string.split())
    for t in soup(["script", "style", "nav", "header", "footer", "form", "noscript", "svg", "head"]):
        t.decompose()
    for t in soup.find_all(True):
        if t.attrs is None:
            continue
        cls = set(t.get("class") or [])
        if cls & _DROP_CLASSES or (t.get("id") or "") in _DROP_IDS:
            t.decompose()
    root = soup
    if main_selector:
        sel = soup.select_one(main_selector)
        if sel is not None:
            root = sel
    h1 = root.find("h1")
    if h1 is not None:
        h1t = _heading_text(h1.get_text(" "))
        if h1t:
            title = h1t
    title = re.sub(r"\s+[—–|-]\s+Python 3\.\d+\.\d+ documentation$", "", title)

    qa: list[dict] = []
    # section openings: heading followed by its first paragraph
    for h in root.find_all(["h2", "h3"]):
        heading = _heading_text(h.get_text(" "))
        p = h.find_next("p")
        if not heading or p is None or len(heading.split()) > 10:
            continue
        if p.find_previous(["h1", "h2", "h3", "h4"]) is not h:
            continue  # the section has no paragraph of its own before the next heading
        sent = first_sentence(p.get_text(""))
        ans = _short_answer(sent)
        if ans and ans.endswith(".") and ans[0].isalnum():
            qa.append({"kind": "section", "anchor": heading, "answer": ans,
                       "question": f'What is the first sentence of the section "{heading}" in "{title}"?'})
    if api:
        for dl in root.find_all("dl", class_=["function", "method"]):
            dt = dl.find("dt")
            dd = dl.find("dd")
            if dt is None or dd is None or not dt.get("id"):
                continue
            name = dt["id"]
            p = dd.find("p")
            if p is None:
                continue
            ans = _short_answer(first_sentence(p.get_text("")))
            kind = "method" if "method" in (dl.get("class") or []) else "function"
            vis = "".join(x.get_text("") for x in dt.find_all(class_=["descclassname", "descname"]))
            vis = " ".join(vis.split()) or name
            if ans and ans[0].isalnum() and "." in name:
                qa.append({"kind": "api", "anchor": vis, "answer": ans,
                           "question": f"What does the Python {kind} {name}() do?"})

    # reference pages (PostgreSQL and other DocBook output): "name — purpose" and option lists
    rn = root.find("div", class_="refnamediv")
    refname = None
    if rn is not None and rn.find("p") is not None:
        m = re.match(r"^(.+?)\s+—\s+(.+)$", " ".join(rn.find("p").get_text("").split()))
        if m:
            refname = m.group(1).split(",")[0].strip()
            ans = _short_answer(m.group(2).rstrip("."))
            if ans:
                what = ("the SQL command " if "/sql-" in doc_id else "the program " if "/app-" in doc_id
                        else "the function " if "/spi-" in doc_id else "")
                qa.append({"kind": "man_name", "anchor": m.group(1), "answer": ans,
                           "question": f"What does {what}{refname} do?"})
    if refname and "/app-" in doc_id:
        for dt in root.select("dl.variablelist > dt"):
            codes = dt.find_all("code", class_="option")
            dd = dt.find_next_sibling("dd")
            if not codes or dd is None or dd.find("p") is None:
                continue
            opts = [c.get_text("").split()[0].split("=")[0] for c in codes if c.get_text("").strip()]
            opts = [o for o in opts if re.fullmatch(r"--?[A-Za-z0-9?][\w-]*", o)]
            ans = _short_answer(first_sentence(dd.find("p").get_text("")))
            if opts and ans and ans[0].isalnum():
                opt = opts[stable_pick(doc_id + opts[0]) % len(opts)]
                qa.append({"kind": "man_option", "anchor": max(opts, key=len), "answer": ans,
                           "question": f"What does the {opt} option of {refname} do?"})

    for pre in root.find_all("pre"):
        txt = pre.get_text()
        pre.clear()
        pre.append(txt.replace("\n", _PRE_NL))
    for t in root.find_all(_BLOCK_TAGS):
        t.insert_before("\n\n")
        t.insert_after("\n\n")
    for t in root.find_all(["td", "th"]):
        t.insert_after(" | ")
    text = root.get_text("")
    pars = []
    for block in re.split(r"\n\s*\n", text):
        if _PRE_NL in block:
            lines = [ln.rstrip() for ln in block.strip("\n").replace("\n", " ").split(_PRE_NL)]
            while lines and not lines[0].strip():
                lines.pop(0)
            while lines and not lines[-1].strip():
                lines.pop()
            if lines:
                pars.append("\n".join(lines))
        else:
            b = " ".join(block.replace("¶", " ").split())
            b = re.sub(r"(\s*\|\s*)+$", "", b)
            if b:
                pars.append(b)
    text = normalize_text("\n\n".join(pars))
    if word_count(text) < 30:
        return None
    return {"id": doc_id, "source_package": package, "title": title or doc_id, "text": text,
            "split_key": doc_id, "format": "html", "licence": licence, "qa": qa}


# --------------------------------------------------------------------------- manual pages

_MAN_SECTION = re.compile(r"^[A-Z][A-Z0-9 ,/&()'-]*$")


def find_mandoc(root: Path) -> str:
    cand = root / "mandoc" / "usr" / "bin" / "mandoc"
    if cand.exists():
        return str(cand)
    return "mandoc"


def render_man(path: Path, mandoc: str) -> str | None:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except OSError:
        return None
    if raw.lstrip().startswith(b".so ") or len(raw) < 200:
        return None
    try:
        out = subprocess.run([mandoc, "-T", "utf8", "-O", "width=1000"], input=raw,
                             capture_output=True, timeout=60).stdout
    except (subprocess.TimeoutExpired, OSError):
        return None
    s = out.decode("utf-8", "replace")
    s = re.sub(r".\x08", "", s)
    # tables drawn with box characters: drop border lines, keep cells separated by '|'
    out = []
    for ln in s.split("\n"):
        if ln.strip() and not ln.strip(" ┌┐└┘├┤┬┴┼─═╞╡╪╤╧│"):
            continue
        ln = ln.replace("│", "|")
        out.append(ln)
    return "\n".join(out)


def parse_man(rendered: str, page: str, package: str, licence: str, doc_id: str) -> dict | None:
    lines = rendered.split("\n")
    # drop header and footer lines
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines:
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if lines:
        lines.pop()
    blocks: list[str] = []
    qa: list[dict] = []
    name_line = ""
    section = ""
    i = 0
    n = len(lines)

    def indent(s: str) -> int:
        return len(s) - len(s.lstrip(" "))

    while i < n:
        ln = lines[i]
        if not ln.strip():
            i += 1
            continue
        ind = indent(ln)
        if ind == 0 and _MAN_SECTION.match(ln.strip()):
            section = ln.strip()
            blocks.append(section)
            i += 1
            continue
        # option item: line starting with '-' (or '+') followed by deeper-indented description
        stripped = ln.strip()
        nxt = lines[i + 1] if i + 1 < n else ""
        if stripped[:1] in "-+" and len(stripped) > 1 and stripped[1] != " ":
            tag = desc0 = None
            if nxt.strip() and indent(nxt) > ind:
                k = indent(nxt)
                if len(ln) > k and ln[k - 1] == " " and ln[k] != " " and ln[ind:k].strip():
                    tag, desc0 = ln[ind:k].strip(), ln[k:].strip()
                else:
                    tag, desc0 = stripped, None
            else:
                m = re.match(r"^(\S+(?:, \S+)*)\s{2,}(\S.*)$", stripped)
                if m:
                    tag, desc0 = m.group(1), m.group(2)
                elif (ind + 7 < len(ln) and ln[ind + 6] == " " and ln[ind + 7] != " "
                      and len(ln[ind:ind + 7].strip()) > 1):
                    tag, desc0 = ln[ind:ind + 7].strip(), ln[ind + 7:].strip()
            if tag is not None:
                desc_lines = [desc0] if desc0 else []
                j = i + 1
                # description: following lines deeper than the tag, up to a blank line + shallower line
                while j < n:
                    l2 = lines[j]
                    if l2.strip() and indent(l2) <= ind:
                        break
                    if not l2.strip():
                        # paragraph break inside the description: keep only the first paragraph in the item
                        break
                    desc_lines.append(l2.strip())
                    j += 1
                if desc_lines:
                    desc = " ".join(desc_lines)
                    blocks.append(tag + "\n  " + desc)
                    opts = [o.split("=")[0].split("[")[0] for o in re.split(r",\s*|\s+or\s+", tag)]
                    opts = [o for o in opts if re.fullmatch(r"[-+]{1,2}[A-Za-z0-9?@#][\w-]*", o)]
                    ans = _short_answer(first_sentence(desc))
                    if opts and ans and section not in ("SYNOPSIS", "EXAMPLES", "EXAMPLE"):
                        opt = max(opts, key=len) if len(opts) > 1 and (stable_pick(page + tag) % 2) else opts[0]
                        qa.append({"kind": "man_option", "anchor": tag, "answer": ans,
                                   "question": f"What does the {opt} option of {page} do?"})
                    i = j
                    continue
        # ordinary paragraph: consecutive non-blank lines
        par = [ln]
        j = i + 1
        while j < n and lines[j].strip() and not (indent(lines[j]) == 0):
            if lines[j].strip()[:1] in "-+" and indent(lines[j]) < indent(lines[j - 1]):
                break
            par.append(lines[j])
            j += 1
        block = reflow("\n".join(par))
        if block:
            blocks.append(block)
            if section == "NAME" and not name_line:
                name_line = block.replace("\n", " ")
        i = j
    text = normalize_text("\n\n".join(blocks))
    if word_count(text) < 30:
        return None
    title = page
    if name_line:
        m = re.match(r"^(.+?)\s+[-\u2010\u2013\u2014]+\s+(.+)$", name_line)
        if m:
            names, what = m.group(1), m.group(2).strip()
            ans = _short_answer(what.rstrip("."))
            if ans and re.search(r"[a-z]", ans):
                names0 = names.split(",")[0].strip()
                kind_word = "command" if doc_id.split(".")[-1].startswith(("1", "8")) else "manual page"
                if doc_id.split(".")[-1].startswith(("2", "3")):
                    kind_word = "C library function" if doc_id.split(".")[-1].startswith("3") else "system call"
                q = f"What does the {kind_word} {names0} do?" if kind_word != "manual page" else \
                    f"What is the manual page {names0} about?"
                qa.append({"kind": "man_name", "anchor": names, "answer": ans, "question": q})
            title = f"{page}: {what}" if len(what) < 100 else page
    return {"id": doc_id, "source_package": package, "title": title, "text": text, "split_key": "man:" + page,
            "format": "man", "licence": licence, "qa": qa}


def stable_pick(s: str) -> int:
    from .text import stable_hash

    return stable_hash(s)


# --------------------------------------------------------------------------- info manuals

def info_docs(path_list: list[Path], package: str, licence: str, manual: str) -> list[dict]:
    raw = b""
    for p in path_list:
        raw += gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
    s = raw.decode("utf-8", "replace")
    docs = []
    for part in s.split("\x1f"):
        part = part.lstrip("\n")
        if not part.startswith("File:"):
            continue
        header, _, body = part.partition("\n")
        m = re.search(r"Node:\s*([^,\t]+)", header)
        if not m:
            continue
        node = m.group(1).strip()
        if node in ("Top",) or "Index" in node or "Concept" in node and "Index" in node:
            continue
        body_lines = []
        in_menu = False
        for ln in body.split("\n"):
            if ln.startswith("* Menu:"):
                in_menu = True
                continue
            if in_menu:
                if ln.startswith("* ") or ln.startswith("   ") or not ln.strip():
                    continue
                in_menu = False
            if ln.startswith("   *Note") or re.fullmatch(r"\s*[=*\-.]{3,}\s*", ln):
                continue
            body_lines.append(ln)
        blocks = [reflow(b) for b in "\n".join(body_lines).split("\n\n")]
        blocks = [b for b in blocks if b.strip()]
        # drop the "Next/Prev" line and heading repeat
        if blocks and blocks[0].split(" ", 1)[-1].strip() == node:
            blocks[0] = node
        text = normalize_text("\n\n".join(blocks))
        if word_count(text) < 40:
            continue
        qa = []
        prose = [b for b in blocks[1:] if "\n" not in b and word_count(b) >= 8]
        if prose:
            ans = _short_answer(first_sentence(prose[0]))
            if ans and ans.endswith(".") and len(node.split()) <= 8:
                qa.append({"kind": "section", "anchor": node, "answer": ans,
                           "question": f'What is the first sentence of the section "{node}" in the {manual} manual?'})
        did = f"{package}/info/{manual}/{node}"
        docs.append({"id": did, "source_package": package, "title": f"{manual}: {node}", "text": text,
                     "split_key": did, "format": "info", "licence": licence, "qa": qa})
    return docs


# --------------------------------------------------------------------------- Perl POD

def pod_doc(path: Path, package: str, licence: str) -> dict | None:
    try:
        out = subprocess.run(["pod2text", "-w", "76", str(path)], capture_output=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    s = out.decode("utf-8", "replace")
    blocks = []
    qa = []
    name = path.stem
    heading = None
    for b in s.split("\n\n"):
        if not b.strip():
            continue
        b = b.strip("\n")
        if not b.startswith(" "):
            first, _, b = b.partition("\n")
            heading = first.strip()
            blocks.append(heading)
            if not b.strip():
                continue
        r = reflow(b)
        lines = [ln for ln in b.split("\n") if ln.strip()]
        if "\n" in r and len({len(ln) - len(ln.lstrip()) for ln in lines}) == 1 and \
                all(len(ln) >= 60 for ln in lines[:-1]) and not re.search(r"[{};$@%]\s*$", b):
            r = " ".join(ln.strip() for ln in lines)  # wrapped prose of an =item body
        blocks.append(r)
        if heading and "\n" not in r and word_count(r) >= 8 and heading not in ("NAME",):
            ans = _short_answer(first_sentence(r))
            if ans and ans.endswith(".") and len(heading.split()) <= 8:
                qa.append({"kind": "section", "anchor": heading, "answer": ans,
                           "question": f'What is the first sentence of the section "{heading}" in {name}?'})
            heading = None
    text = normalize_text("\n\n".join(blocks))
    m = re.search(r"^NAME\n\n(\S+) - (.+)$", text, re.M)
    title = name
    if m:
        title = f"{m.group(1)} - {m.group(2)}"
        ans = _short_answer(m.group(2).rstrip("."))
        if ans:
            qa.append({"kind": "man_name", "anchor": m.group(1), "answer": ans,
                       "question": f"What is the Perl manual page {m.group(1)} about?"})
    if word_count(text) < 30:
        return None
    did = f"{package}/pod/{name}"
    return {"id": did, "source_package": package, "title": title, "text": text, "split_key": "man:" + name,
            "format": "pod", "licence": licence, "qa": qa}


# --------------------------------------------------------------------------- dictd dictionaries

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64num(s: str) -> int:
    v = 0
    for ch in s:
        v = v * 64 + _B64.index(ch)
    return v


def read_dictd(index: Path, data: Path) -> list[tuple[str, str]]:
    """(headword, raw entry text) pairs, one per distinct entry (alternate headwords folded)."""
    blob = gzip.open(data).read() if str(data).endswith(".dz") or str(data).endswith(".gz") else data.read_bytes()
    seen = set()
    out = []
    for ln in index.read_text("utf-8", "replace").split("\n"):
        parts = ln.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        off, ln_ = _b64num(parts[1]), _b64num(parts[2])
        if off in seen:
            continue
        seen.add(off)
        out.append((parts[0], blob[off:off + ln_].decode("utf-8", "replace")))
    return out


_POS = r"(?:n|v|a|adv|prep|conj|interj|pron|v\. t|v\. i|p\. p|p\. a|imp|pl|n\. pl|superl|compar)\."


def _clean_def(seg: str) -> str | None:
    seg = re.sub(r"^(?:\s*[\[(][^\])]*[\])])+\s*", "", seg).strip()
    if not seg or not seg[0].isalnum():
        return None
    return _short_answer(seg)


def dict_docs(name: str, pairs: list[tuple[str, str]], package: str, licence: str) -> list[dict]:
    docs = []
    for head, raw in pairs:
        s = raw.replace("[1913 Webster]", "").replace("[PJC]", "")
        s = re.sub(r"\[(?:WordNet 1\.5|Century Dict\.|Webster 1913 Suppl\.|Chambers 1881|RP|MW10|NPD|Eng\. Dict\.)\]",
                   "", s)
        s = re.sub(r"\\[^\\\n]{1,60}\\", "", s)  # gcide pronunciation markup
        s = s.replace("{", "").replace("}", "")
        s = s.strip("\n")
        first, _, rest = s.partition("\n")
        h = " ".join(head.split())
        if first.strip().lower() == h.lower() and name != "gcide":
            # entry = headword line + body
            h = first.strip()
            if name == "vera":
                rest = " ".join(rest.split())
            blocks = [h] + [reflow(b) for b in rest.split("\n\n")]
        else:
            blocks = [reflow(b) for b in s.split("\n\n")]
        blocks = [b for b in blocks if b.strip()]
        if not blocks:
            continue
        text = normalize_text("\n\n".join(blocks))
        if word_count(text) < 4:
            continue
        qa = []
        ans = None
        body = blocks[1] if len(blocks) > 1 else ""
        if name == "gcide":
            flat = " ".join(text.split())
            m = re.search(r"(?:^|\s)1\.\s+([^;:.\[]+)", flat)
            if m:
                ans = _clean_def(m.group(1))
            else:
                rest2 = re.sub(r"^.*?,\s*" + _POS + r"\s*", "", flat, count=1)
                if rest2 != flat:
                    rest2 = re.sub(r"^(?:[\[(][^\])]*[\])]\s*)+", "", rest2)
                    ans = _clean_def(re.split(r"[;:.\[]", rest2, maxsplit=1)[0])
            if ans and ans in text and len(ans) >= 8:
                qa.append({"kind": "dict_definition", "anchor": h, "answer": ans,
                           "question": f'What does the word "{h}" mean?'})
        elif name in ("foldoc", "jargon") and body:
            body = re.sub(r"^(?:\d\.\s+)?(?:\[[^\]]*\]\s*)+", "", body)
            ans = _clean_def(first_sentence(body))
            if ans and ans in text:
                label = {"foldoc": "the computing term", "jargon": "the hacker jargon term"}[name]
                qa.append({"kind": "dict_definition", "anchor": h, "answer": ans,
                           "question": f'What is meant by {label} "{h}"?'})
        elif name == "devil":
            m = re.match(r"^[^,]+,\s*" + _POS + r"\s*(.+)$", blocks[0].replace("\n", " "))
            if m:
                ans = _clean_def(first_sentence(m.group(1)))
                if ans and ans in text:
                    qa.append({"kind": "dict_definition", "anchor": head, "answer": ans,
                               "question": f'How does The Devil\'s Dictionary define "{head.lower()}"?'})
        elif name == "vera" and body:
            exp = re.sub(r",?\s*\"[^\"]*\"\s*$", "", body)
            exp = re.sub(r"\s*\([^)]*\)\s*$", "", exp).strip()
            ans = _short_answer(exp)
            if ans and ans in text and not ans.lower().startswith("see "):
                qa.append({"kind": "acronym", "anchor": h, "answer": ans,
                           "question": f'What does the acronym "{h}" stand for?'})
        did = f"{package}/{name}/{h}"
        docs.append({"id": did, "source_package": package, "title": h, "text": text,
                     "split_key": "word:" + h.lower(), "format": "dict", "licence": licence, "qa": qa})
    return docs


# --------------------------------------------------------------------------- WordNet

_WN_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def wordnet_docs(wn_dir: Path, package: str, licence: str) -> list[dict]:
    senses: dict[str, list[tuple[str, list[str], str]]] = {}
    order: list[str] = []
    for pos_file in ("noun", "verb", "adj", "adv"):
        p = wn_dir / f"data.{pos_file}"
        for ln in p.read_text("utf-8", "replace").split("\n"):
            if not ln or ln.startswith("  "):
                continue
            head, _, gloss = ln.partition(" | ")
            f = head.split()
            ss_type = f[2]
            w_cnt = int(f[3], 16)
            lemmas = [f[4 + 2 * k] for k in range(w_cnt)]
            lemmas = [re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in lemmas]
            gloss = gloss.strip()
            for w in lemmas:
                key = w.lower()
                if key not in senses:
                    senses[key] = []
                    order.append(key)
                senses[key].append((_WN_POS[ss_type], [x for x in lemmas if x.lower() != key], gloss))
    docs = []
    for key in order:
        ss = senses[key]
        lines = [key]
        for k, (pos, syn, gloss) in enumerate(ss[:12], 1):
            line = f"{k}. ({pos}) {gloss}"
            if syn:
                line += " Synonyms: " + ", ".join(dict.fromkeys(syn)) + "."
            lines.append(line)
        text = normalize_text("\n\n".join(lines))
        qa = []
        first_def = re.split(r';\s*"|;\s*$', ss[0][2])[0].strip().rstrip(";")
        ans = _short_answer(first_def)
        if ans and ans in text and len(ans) >= 8:
            qa.append({"kind": "dict_definition", "anchor": key, "answer": ans,
                       "question": f'What does the word "{key}" mean?'})
        did = f"{package}/wordnet/{key}"
        docs.append({"id": did, "source_package": package, "title": key, "text": text,
                     "split_key": "word:" + key, "format": "wordnet", "licence": licence, "qa": qa})
    return docs


def walk_files(root: Path, patterns: list[str]) -> list[Path]:
    out = []
    for pat in patterns:
        out.extend(p for p in root.glob(pat) if p.is_file() and not p.is_symlink())
    return sorted(set(out))


def rel_id(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)
