"""Per-browser users without a server: own sessions and collections, resume by id, freeing, uploads."""

from __future__ import annotations

import pytest

from app import MultiDocQA
from retrieval import HashEmbedder
from tests.app.app_testutil import special_tokenizer, tiny_model
from ui import uploads
from ui.users import Users
from ui.workspace import Workspace


@pytest.fixture
def users(tmp_path):
    tok = special_tokenizer()
    qa = MultiDocQA(None, model=tiny_model(vocab_size=tok.get_vocab_size()), tokenizer=tok, k=2, max_new_tokens=4)
    ws = Workspace(qa, data_dir=tmp_path / "shared", embedder=HashEmbedder(64))
    yield Users(ws)
    ws.close()


def test_users_have_their_own_collections_and_conversations(users, tmp_path):
    (tmp_path / "a.txt").write_text("Alpha is the first letter.")
    a, _ = users.attach("tab-a")
    b, _ = users.attach("tab-b")
    assert a.uid != b.uid and users.live == 2
    qa = a.open(create=True)
    results = list(uploads.ingest(qa, [tmp_path / "a.txt"], a.uploads_dir, 2**20))
    assert [r.status for r in results] == ["added"]
    a.select(a.collection)
    assert a.session.ask("Which letter is first?").sources[0].title == "a"
    assert b.open() is None or not b.open().documents()  # b's own collection is not a's
    assert b.session.ask("Which letter is first?").sources == [] and len(b.session) == 1 == len(a.session)
    assert a.collections_dir != b.collections_dir
    users.ws.shared("team", create=True)
    assert ("team (shared)", "shared:team") in a.collection_refs() and ("team (shared)", "shared:team") in \
        b.collection_refs()


def test_a_user_resumes_by_id_and_is_freed_when_its_last_tab_closes(users):
    a, _ = users.attach("tab-1")
    a.session.ask("remember me?")
    same, _ = users.attach("tab-2", a.uid)  # a second tab of the same browser
    assert same is a and users.live == 1
    users.detach("tab-1")
    assert users.live == 1
    users.detach("tab-2")
    assert users.live == 0 and a.conversation_file.exists()
    back, message = users.attach("tab-3", a.uid)
    assert back is not a and back.uid == a.uid and not message
    assert [t.question for t in back.session.turns] == ["remember me?"]
    assert back.session.tokens_read == a.session.tokens_read


@pytest.mark.parametrize("uid", [None, "../../etc", "x" * 22 + "/", 42])
def test_unknown_or_malformed_ids_get_a_new_user(users, uid):
    user, _ = users.attach("tab", uid)
    assert user.uid != uid and user.folder.parent == users.ws.users_dir


def test_a_damaged_saved_conversation_starts_afresh_with_a_message(users):
    a, _ = users.attach("tab-1")
    a.session.ask("hello?")
    users.detach("tab-1")
    a.conversation_file.write_bytes(b"garbage")
    back, message = users.attach("tab-2", a.uid)
    assert "could not be restored" in message and len(back.session) == 0


def test_uploads_are_checked_before_ingestion(users, tmp_path):
    a, _ = users.attach("tab")
    (tmp_path / "x.exe").write_bytes(b"MZ")
    (tmp_path / "big.txt").write_bytes(b"a" * 2048)
    (tmp_path / "ok.md").write_text("# Title\n\nSome words.")
    results = list(uploads.ingest(a.open(create=True), [tmp_path / n for n in ("x.exe", "big.txt", "ok.md")],
                                  a.uploads_dir, max_bytes=1024))
    assert [(r.path, r.status) for r in results] == [("x.exe", "failed"), ("big.txt", "failed"), ("ok.md", "added")]
    assert "unsupported file type '.exe'" in results[0].error and "too large" in results[1].error
    assert sorted(p.name for p in a.uploads_dir.iterdir()) == ["ok.md"]


def test_an_upload_whose_stored_copy_is_gone_is_kept(users, tmp_path):
    """A duplicate is not kept in the uploads folder, except when the collection's own copy of that file is
    gone: the document then points at the new upload, which must stay."""
    a, _ = users.attach("tab")
    (tmp_path / "a.txt").write_text("Alpha is the first letter.")
    qa = a.open(create=True)
    list(uploads.ingest(qa, [tmp_path / "a.txt"], a.uploads_dir, 2**20))
    assert [r.status for r in uploads.ingest(qa, [tmp_path / "a.txt"], a.uploads_dir, 2**20)] == ["duplicate"]
    assert sorted(p.name for p in a.uploads_dir.iterdir()) == ["a.txt"]  # the duplicate was not kept
    (a.uploads_dir / "a.txt").unlink()
    [same] = uploads.ingest(qa, [tmp_path / "a.txt"], a.uploads_dir, 2**20)  # restored where it was
    assert same.moved_from is None and [p.name for p in a.uploads_dir.iterdir()] == ["a.txt"]
    (a.uploads_dir / "a.txt").unlink()
    (tmp_path / "b.txt").write_text("Alpha is the first letter.")
    [moved] = uploads.ingest(qa, [tmp_path / "b.txt"], a.uploads_dir, 2**20)  # the same bytes, another name
    assert moved.moved_from == str(a.uploads_dir / "a.txt") and [p.name for p in a.uploads_dir.iterdir()] == ["b.txt"]
    assert [d.source for d in qa.documents()] == [str(a.uploads_dir / "b.txt")]


def test_new_users_start_on_the_shared_collection_or_their_own_when_it_is_gone(users):
    users.ws.shared("manuals", create=True)
    users.ws.start_collection = "shared:manuals"
    assert users.attach("tab-1")[0].collection == "shared:manuals"
    users.ws.start_collection = "shared:gone"
    assert users.attach("tab-2")[0].collection == "mine:my-documents"
