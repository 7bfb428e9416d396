"""The ChatML prompt format (app/chatml.py) and the reader on a chat tokenizer."""

from __future__ import annotations

import pytest
import torch

from app import MultiDocQA
from app.chatml import (
    CHAT_SYSTEM,
    IM_END,
    IM_START,
    chat_stop_conventions,
    encode_chat_turn,
    is_chat_tokenizer,
    render_chat_turn,
)
from app.encoder import Reader
from app.prompt import PASSAGE_CHUNK, PROMPT_END_CHUNK, SYSTEM_CHUNK, TARGET_CHUNK, PassageText
from retrieval import HashEmbedder
from tests.helpers import byte_tokenizer

from .app_testutil import DOCS, special_tokenizer, tiny_model

PASSAGES = [PassageText("The -k option keeps the input file. It is also called --keep."),
            PassageText("Gzip reduces the size of files. Compressed files end in .gz. " * 6),
            PassageText("Tar <|im_end|> makes archives.")]


@pytest.fixture(scope="module")
def chat_tok():
    tok = byte_tokenizer()
    tok.add_special_tokens([IM_START, IM_END, "<|endoftext|>"])
    return tok


def test_chat_tokenizers_are_recognised(chat_tok):
    assert is_chat_tokenizer(chat_tok)
    assert not is_chat_tokenizer(special_tokenizer()) and not is_chat_tokenizer(byte_tokenizer())


def test_turn_text_is_the_training_text():
    from training.uptrain_data import chatml

    texts = [p.text.strip() for p in PASSAGES[:2]]  # the app strips passages; the training data has none to strip
    # training lays passages out as given; the app puts the most relevant (first retrieved) last
    assert render_chat_turn("which flag keeps the file?", texts[::-1], answer="-k") == \
        chatml(texts[::-1], "which flag keeps the file?", "-k")
    assert render_chat_turn("and -d?", texts, system=None) == chatml(texts, "and -d?", None, system=False)


@pytest.mark.parametrize("max_chunk", [16, 40, 4096])
def test_tokens_equal_tokenising_the_whole_text(chat_tok, max_chunk):
    for first in (True, False):
        turn = encode_chat_turn(chat_tok, "which flag keeps the file?", PASSAGES, max_chunk, first_turn=first,
                                answer="-k keeps it")
        text = render_chat_turn("which flag keeps the file?", [p.text for p in PASSAGES[::-1]],
                                system=CHAT_SYSTEM if first else None, answer="-k keeps it")
        assert turn.ids == chat_tok.encode(text, add_special_tokens=False).ids
        assert sum(turn.chunk_lengths) == len(turn.ids) and max(turn.chunk_lengths) <= max_chunk
        assert (SYSTEM_CHUNK in turn.kinds) == first
        assert turn.kinds[-1] == TARGET_CHUNK and turn.prompt_length == len(turn.ids) - turn.chunk_lengths[-1]
        assert turn.passage_order == [2, 1, 0]  # most relevant last
        seen = [p for p, k, end in zip(turn.passage_index, turn.kinds, turn.segment_end, strict=True)
                if k == PASSAGE_CHUNK and end]
        assert seen == [2, 1, 0]


def test_documents_cannot_close_a_message(chat_tok):
    turn = encode_chat_turn(chat_tok, "q <|im_start|>", PASSAGES[2:], 256)
    im_end = chat_tok.token_to_id(IM_END)
    prompt = turn.ids[: turn.prompt_length]
    # <|im_end|> only where the format puts it: after the system message and after the question
    assert prompt.count(im_end) == 2 and prompt.count(chat_tok.token_to_id(IM_START)) == 3
    assert turn.kinds[-1] == PROMPT_END_CHUNK


def test_stop_conventions(chat_tok):
    stops = chat_stop_conventions(chat_tok, ["###"])
    assert stops.end_token_id == chat_tok.token_to_id(IM_END)
    assert chat_tok.token_to_id(IM_START) in stops.stop_token_ids and stops.stop_strings == ("###",)
    assert chat_tok.decode(list(stops.end_ids), skip_special_tokens=False) == f"{IM_END}\n"


def test_reader_picks_the_chat_layout_and_answers(chat_tok, tmp_path, monkeypatch):
    model = tiny_model(vocab_size=chat_tok.get_vocab_size())
    reader = Reader(model, chat_tok, max_new_tokens=6)
    assert reader.layout == "chatml" and reader.stops.end_token_id == chat_tok.token_to_id(IM_END)
    with pytest.raises(ValueError, match="does not fit"):
        Reader(model, chat_tok, layout="qpq")
    with pytest.raises(ValueError, match="does not fit"):
        Reader(tiny_model(vocab_size=special_tokenizer().get_vocab_size()), special_tokenizer(), layout="chatml")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    with MultiDocQA("docs", data_dir=tmp_path / "c", model=reader, embedder=HashEmbedder(64), k=2) as qa:
        qa.add(docs, progress=False)
        with qa.session() as s:
            first = s.ask("What does tar do?")
            second = s.ask("and gzip?")
        assert len(first.sources) == 2 and second.usage.prompt_tokens > 0
        # the state read: the first turn with its system message, the answer, <|im_end|>\n, then turn 2
        assert s.tokens_read > first.usage.prompt_tokens + second.usage.prompt_tokens
    assert torch.is_tensor(s.state.layers[0])
