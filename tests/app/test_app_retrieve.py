"""app.retrieve: lexical re-ranking, reciprocal rank fusion with BM25, follow-up queries from the
conversation, and their use by MultiDocQA and sessions."""

from __future__ import annotations

import pytest

from app.retrieve import conversation_query, fuse, leans_on_context, lexical_rerank, retrieve, rrf, terms
from retrieval import Collection, Document, HashEmbedder, Page, SearchHit


def hit(score, text, pid):
    return SearchHit(score, text, f"d{pid}", f"t{pid}", f"s{pid}", None, 0, len(text), 0, pid)


def test_terms_keep_option_and_dotted_names():
    assert terms("What does the --version option of grep do?") == {"--version", "grep"}
    assert terms("What does zlib.decompress() do?") == {"zlib.decompress"}


def test_terms_keep_operators_but_not_punctuation():
    assert terms("What does // do in jq?") == {"//", "jq"}
    assert terms("jq: is |= like =? (see 'a', ...)") == {"jq", "|=", "like", "see"}  # not "=?", "..."
    assert terms("Sentences end. Quotes \"close\"; lists, go on!") == {"sentences", "end", "quotes", "close",
                                                                         "lists", "go"}


def test_an_operator_lifts_the_passage_that_defines_it():
    hits = [hit(0.60, "Filters run on a stream of JSON values and produce output.", 1),
            hit(0.55, "Alternative operator: a // b gives b when a is null or false.", 2)]
    assert [h.passage_id for h in lexical_rerank("what does // do in jq", hits)] == [2, 1]


def test_exact_terms_lift_the_right_passage():
    hits = [hit(0.62, "grep prints lines that match patterns.", 1),
            hit(0.55, "--version Output the version number of grep and exit.", 2),
            hit(0.50, "Binary files are detected by NUL bytes.", 3)]
    ranked = lexical_rerank("What does the --version option of grep do?", hits)
    assert [h.passage_id for h in ranked] == [2, 1, 3]
    assert ranked[0].score > ranked[1].score >= ranked[2].score and ranked[0].text == hits[1].text
    assert lexical_rerank("what is it?", hits) == hits  # nothing but stop words: order kept
    assert lexical_rerank("--version grep", hits, weight=0) == hits


def test_multidocqa_fuses_dense_and_bm25(qa, monkeypatch):
    calls = []
    dense, lexical = qa.collection.search, qa.collection.lexical_search
    monkeypatch.setattr(qa.collection, "search",
                        lambda q, k, documents=None: calls.append(("dense", k)) or dense(q, k, documents))
    monkeypatch.setattr(qa.collection, "lexical_search",
                        lambda q, k, documents=None: calls.append(("bm25", k)) or lexical(q, k, documents))
    assert len(qa.ask("What does the -z option of tar do?").sources) == 2
    assert calls == [("dense", 40), ("bm25", 40)]  # more candidates than needed, fused down to k
    calls.clear()
    qa.rerank = False  # still hybrid, without the lexical re-rank of the dense list
    qa.ask("What does the -z option of tar do?")
    assert calls == [("dense", 40), ("bm25", 40)]
    calls.clear()
    assert len(retrieve(qa.collection, "tar -z", 2, rerank=False, hybrid=False)) == 2
    assert calls == [("dense", 2)]


def test_rrf_on_hand_made_rankings():
    fused = rrf([["a", "b", "c"], ["c", "a"]], c=60)
    assert [key for key, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62) and fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2][1] == pytest.approx(1 / 62)
    # Weights scale a ranking's votes; c sets how fast they fall with rank.
    assert [key for key, _ in rrf([["a", "b"], ["b", "a"]], weights=[1.0, 2.0])] == ["b", "a"]
    assert rrf([["x"], ["y"]], c=0) == [("x", 1.0), ("y", 1.0)]  # a tie keeps first-seen order
    assert rrf([[], []]) == [] and rrf([]) == []
    with pytest.raises(ValueError, match="weights"):
        rrf([["a"]], weights=[1.0, 1.0])


def test_fuse_keeps_each_passage_once_with_its_fused_score():
    a, b, c = hit(0.9, "alpha", 1), hit(0.8, "beta", 2), hit(7.0, "gamma", 3)
    fused = fuse([[a, b], [c, a]], c=60)
    assert [h.passage_id for h in fused] == [1, 3, 2]
    assert fused[0].text == "alpha" and fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)


def doc(name: str, title: str, text: str) -> Document:
    return Document(id=name, source=f"/virtual/{name}.txt", title=title, kind="text", text=text,
                    pages=[Page(None, 0, len(text))], size_bytes=len(text))


@pytest.fixture
def manuals(tmp_path):
    with Collection.create("manuals", tmp_path, embedder=HashEmbedder(64), progress=False) as col:
        col.add_documents([
            doc("tree-depth", "tree manual", "tree -L level  Max display depth of the directory tree."),
            doc("tree-links", "tree manual", "tree -l  Follow symlinks if they point to directories."),
            doc("ncdu-links", "ncdu manual", "-L, --follow-symlinks  Follow symlinks and count the size of the "
                                             "file they point to."),
            doc("zstd-d", "zstd manual", "-d, --decompress  Decompress a .zst file; unzstd is the same."),
            doc("zstd-k", "zstd manual", "-k, --keep  Keep the source file after compressing it (default)."),
        ])
        yield col


TREE = [("how do I limit tree to 2 levels deep?", "Use -L level: max display depth of the directory tree.")]


def test_conversation_query_keeps_the_topic_of_a_follow_up(manuals):
    question = "and what if I want it to follow symlinks too?"
    assert leans_on_context(question)
    query = conversation_query(TREE, question)
    assert query.startswith(question) and "tree" in query and "-l" in query  # earlier question, answer's option
    alone = [h.doc_id for h in retrieve(manuals, question, 2)]
    followed = [h.doc_id for h in retrieve(manuals, query, 2)]
    assert "ncdu-links" in alone  # its own words fit another program's option just as well
    assert followed == ["tree-links", "tree-depth"]
    # Short elliptic turns lean on the conversation too.
    assert leans_on_context("descending?") and conversation_query(TREE, "descending?") != "descending?"


def test_conversation_query_lets_a_new_topic_win(manuals):
    question = "how do I decompress a zst file with zstd?"
    assert not leans_on_context(question)
    assert conversation_query(TREE, question) == question
    assert retrieve(manuals, conversation_query(TREE, question), 1)[0].doc_id == "zstd-d"
    assert conversation_query([], "does it keep the source?") == "does it keep the source?"  # nothing to lean on


def test_conversation_query_bounds_what_it_adds():
    history = [(f"question {i} about topic{i} and subject{i}", "answer " * 1000 + "--opt-name") for i in range(50)]
    query = conversation_query(history, "and that?")
    extra = query.removeprefix("and that?").split()
    assert "topic49" in extra and "topic48" in extra and "topic0" not in extra  # the last two turns only
    assert extra[-2:] == ["--opt-name", "answer"] and len(extra) <= 12  # option names first, a few answer terms


def test_session_searches_follow_ups_with_the_conversation(qa, monkeypatch):
    queries = []
    orig = qa.collection.search
    monkeypatch.setattr(qa.collection, "search",
                        lambda q, k, documents=None: queries.append(q) or orig(q, k, documents))
    s = qa.session()
    s.ask("What does the -r option of rsync do?")
    s.ask("and -n?")
    s.ask("How does gzip compress files?")
    assert queries[0] == "What does the -r option of rsync do?"
    assert queries[1].startswith("and -n?") and "rsync" in queries[1] and "-r" in queries[1]
    assert queries[2] == "How does gzip compress files?"  # a new topic stands alone


def test_a_refused_turn_adds_no_answer_terms_to_the_follow_up():
    from app.prompt import REFUSAL

    question = "and what if I want it to follow symlinks too?"
    refused = [(TREE[0][0], REFUSAL)]
    query = conversation_query(refused, question)
    assert "tree" in query and "documents" not in query  # the earlier question counts, the refusal does not
    assert "documents" in conversation_query([(TREE[0][0], "See the documents.")], question)  # a real answer does
