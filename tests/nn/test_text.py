"""Text corpus, tokenizers and token windows: round trips, split, shapes, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compsde.nn import load_dataset
from compsde.nn.data import DatasetNotAvailable
from compsde.nn.text import (
    EOD,
    UNK,
    Tokenizer,
    fortune_documents,
    load_text,
    read_corpus,
    windows,
)

PROSE = ("It was the best of times, it was the worst of times.\nIt was the age of wisdom!\n\n"
         "It was the epoch of belief; it was the season of Light.\n\n"
         "We had everything before us, we had nothing before us.\n\n"
         "It was the spring of hope, it was the winter of despair.\n")


def _write(tmp_path: Path, text: str = "\n\n".join([PROSE] * 20)) -> Path:
    path = tmp_path / "book.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_word_tokens_round_trip():
    tok = Tokenizer.fit("word", [PROSE], vocab=1000)
    ids = tok.encode(PROSE)
    assert UNK not in ids
    assert tok.split("word", "Don't stop -- it's 3 a.m.") == \
        ["don't", "stop", "-", "-", "it's", "3", "a", ".", "m", "."]
    text = tok.decode(ids)
    assert tok.encode(text) == ids                      # ids → text → ids is exact
    assert text.split() == " ".join(tok.split("word", PROSE)).split()
    assert "\n" in text                                  # line breaks are tokens


def test_char_tokens_round_trip_exactly():
    tok = Tokenizer.fit("char", [PROSE], vocab=200)
    assert tok.decode(tok.encode(PROSE)) == PROSE
    assert tok.decode([EOD]) == "\n%\n"


def test_frequency_cap_maps_rare_tokens_to_unk():
    docs = ["a a a a b b b c c d"]
    tok = Tokenizer.fit("word", docs, vocab=4)          # 2 specials + the 2 most frequent
    assert tok.symbols == ["<unk>", "<eod>", "a", "b"]
    assert tok.encode("a b c d") == [2, 3, UNK, UNK]
    with pytest.raises(ValueError, match="vocab must be an integer >= 3"):
        Tokenizer.fit("word", docs, vocab=2)
    with pytest.raises(ValueError, match="tokens must be one of word, char"):
        Tokenizer.fit("bytes", docs, vocab=10)


def test_windows_are_next_token_pairs():
    stream = torch.arange(23)
    x, y = windows(stream, 5)
    assert x.shape == y.shape == (4, 5)
    assert torch.equal(y, x + 1) and int(y[-1, -1]) == 20


def test_loader_split_and_shapes(tmp_path):
    path = _write(tmp_path)
    data = load_dataset(f"text:path={path},context=8,vocab=40")
    docs = read_corpus(path)
    assert len(docs) == 80
    assert data.image_shape == (8,) and data.classes == len(data.tokenizer) <= 40
    assert data.x_train.dtype == torch.int64 and data.x_train.shape[1] == 8
    assert data.x_test.shape[1] == 8 and len(data.y_test) > 0
    total = sum(len(data.tokenizer.encode(d)) + 1 for d in docs)
    # 90 % of the documents train, 10 % test; windows drop at most one context per split
    used = (len(data.y_train) + len(data.y_test)) * 8
    assert total - 2 * 9 <= used <= total
    assert 0.8 < len(data.y_train) / (len(data.y_train) + len(data.y_test)) < 0.97
    x, y = data.train_batch(torch.tensor([0, 3]))
    assert x.shape == y.shape == (2, 8) and torch.equal(x[:, 1:], y[:, :-1])
    batches = list(data.test_batches(batch=2))
    assert sum(len(b[1]) for b in batches) == len(data.y_test)
    again = load_dataset(f"text:path={path},context=8,vocab=40")
    assert torch.equal(again.x_train, data.x_train)      # the split is fixed
    chars = load_dataset(f"text:path={path},tokens=char,context=16")
    assert chars.tokenizer.kind == "char" and chars.image_shape == (16,)


def test_fortune_files_split_on_percent_lines():
    text = "First one.\n  -- Someone\n%\nSecond\none.\n%\n"
    assert fortune_documents(text) == ["First one.\n  -- Someone", "Second\none."]


def test_loading_errors_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DatasetNotAvailable, match=f"{missing}.*apt-get install fortunes"):
        load_dataset(f"text:path={missing}")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n ")
    with pytest.raises(ValueError, match=f"{empty} holds no text"):
        load_dataset(f"text:path={empty}")
    short = tmp_path / "short.txt"
    short.write_text("one two\n\nthree four\n")
    with pytest.raises(ValueError, match=f"{short} is too short for context 32"):
        load_dataset(f"text:path={short}")
    with pytest.raises(ValueError, match="does not take shape"):
        load_dataset("text:shape=3")
    with pytest.raises(ValueError, match="test must be"):
        load_text(str(_write(tmp_path)), test=1.5)


def test_missing_default_corpus_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr("compsde.nn.text.FORTUNES_DIR", str(tmp_path / "absent"))
    with pytest.raises(DatasetNotAvailable, match="apt-get install fortunes"):
        load_dataset("text")


@pytest.mark.needs_data("text")
def test_debian_fortunes_corpus():
    data = load_dataset("text")
    tokens = (len(data.y_train) + len(data.y_test)) * data.context
    assert tokens > 400_000 and data.classes == 2000       # > 1 MB of English text
    unk = float((data.x_train == UNK).double().mean())
    assert 0.05 < unk < 0.3                               # the cap folds the rare tail
