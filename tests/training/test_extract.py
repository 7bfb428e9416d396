"""Extractors on small hand-made inputs (no apt, no mandoc needed)."""

import gzip

from training.corpus.extract import _B64, dict_docs, html_to_doc, info_docs, parse_man, read_dictd

RENDERED_MAN = """FROB(1)                     User Commands                     FROB(1)

NAME
       frob - frobnicate the widgets of a file

SYNOPSIS
       frob [OPTION]... FILE

DESCRIPTION
       Frob reads FILE and frobnicates every widget in it, one after the other.

       -a, --all
              frobnicate hidden widgets too.  This is slow.

       -q     be quiet and print nothing at all.

       --level=N
              use frobnication level N instead of the default of three levels.

SEE ALSO
       grep(1)

GNU frob 1.0                     2024-01-01                     FROB(1)
"""


def test_parse_man_options_and_name():
    d = parse_man(RENDERED_MAN, "frob", "frob-pkg", "GPL-3+", "frob-pkg/man/frob.1")
    assert d["title"] == "frob: frobnicate the widgets of a file"
    assert "FROB(1)" not in d["text"]
    qa = {q["question"]: q for q in d["qa"]}
    assert qa["What does the command frob do?"]["answer"] == "frobnicate the widgets of a file"
    opt = [q for q in d["qa"] if q["kind"] == "man_option"]
    answers = {q["answer"] for q in opt}
    assert "frobnicate hidden widgets too." in answers
    assert "be quiet and print nothing at all." in answers
    assert "use frobnication level N instead of the default of three levels." in answers
    assert any("--level option of frob" in q["question"] for q in opt)
    for q in d["qa"]:
        assert q["answer"] in d["text"]


def test_html_visible_text_sections_and_api(tmp_path):
    html = """<html><head><title>mod — Demo module</title><style>p{}</style></head><body>
    <div class="related">Navigation junk</div>
    <div class="body"><h1>mod — Demo module<a class="headerlink">¶</a></h1>
    <p>This module does demo things for the test suite. It is small.</p>
    <h2>Functions</h2><p>The functions below are all pure and have no side effects at all.</p>
    <dl class="py function"><dt class="sig sig-object py" id="mod.spin">
    <span class="sig-prename descclassname">mod.</span><span class="sig-name descname">spin</span>(x)</dt>
    <dd><p>Spin the value <em>x</em> around twice. Then return it.</p></dd></dl>
    <pre>line one
  line two</pre>
    <script>var x = 1;</script></div><div class="footer">© footer</div></body></html>"""
    f = tmp_path / "mod.html"
    f.write_text(html)
    d = html_to_doc(f, "pkg", "pkg/mod.html", "MIT", "div.body", api=True)
    assert d["title"] == "mod — Demo module"
    assert "Navigation junk" not in d["text"] and "var x" not in d["text"] and "footer" not in d["text"]
    assert "line one\n  line two" in d["text"]
    kinds = {q["kind"]: q for q in d["qa"]}
    assert kinds["api"]["question"] == "What does the Python function mod.spin() do?"
    assert kinds["api"]["answer"] == "Spin the value x around twice."
    assert kinds["section"]["answer"] == "The functions below are all pure and have no side effects at all."
    for q in d["qa"]:
        assert q["answer"] in d["text"]


def _b64(n: int) -> str:
    s = ""
    while True:
        s = _B64[n % 64] + s
        n //= 64
        if n == 0:
            return s


def test_dictd_reader_and_definitions(tmp_path):
    entries = [
        ("Apple", "Apple \\Ap\"ple\\, n. [AS. [ae]ppel.]\n"
                  "   1. The fleshy pome or fruit of a rosaceous tree; as, a ripe apple.\n   [1913 Webster]\n"),
        ("Zebra", "Zebra \\Ze\"bra\\, n.\n   An African wild animal with stripes.\n   [1913 Webster]\n"),
    ]
    blob = b""
    index = []
    for head, body in entries:
        raw = body.encode()
        index.append(f"{head}\t{_b64(len(blob))}\t{_b64(len(raw))}")
        blob += raw
    (tmp_path / "t.index").write_text("\n".join(index) + "\n")
    with gzip.open(tmp_path / "t.dict.dz", "wb") as fh:
        fh.write(blob)
    pairs = read_dictd(tmp_path / "t.index", tmp_path / "t.dict.dz")
    assert [h for h, _ in pairs] == ["Apple", "Zebra"]
    docs = dict_docs("gcide", pairs, "dict-gcide", "GPL-2+")
    assert "[1913 Webster]" not in docs[0]["text"] and "\\" not in docs[0]["text"]
    q = {d["title"]: d["qa"][0] for d in docs}
    assert q["Apple"]["answer"] == "The fleshy pome or fruit of a rosaceous tree"
    assert q["Zebra"]["answer"] == "An African wild animal with stripes"
    assert docs[0]["split_key"] == "word:apple"


def test_info_nodes(tmp_path):
    info = ("This is demo.info\n\x1f\nFile: demo.info,  Node: Top,  Next: Intro\n\nTop node\n* Menu:\n\n* Intro::\n"
            "\x1f\nFile: demo.info,  Node: Intro,  Up: Top\n\n1 Intro\n*******\n\n"
            "The demo program prints a friendly greeting and\nthen exits with status zero.\n\n"
            "   Another paragraph that is indented\non its first line only, as texinfo does.\n\n"
            + "Filler words make this node long enough to count as a document of the corpus. " * 3 + "\n")
    p = tmp_path / "demo.info"
    p.write_text(info)
    docs = info_docs([p], "demo", "GFDL", "Demo")
    assert len(docs) == 1
    d = docs[0]
    assert "The demo program prints a friendly greeting and then exits with status zero." in d["text"]
    assert "Another paragraph that is indented on its first line only, as texinfo does." in d["text"]
    assert d["qa"][0]["answer"] == "The demo program prints a friendly greeting and then exits with status zero."
