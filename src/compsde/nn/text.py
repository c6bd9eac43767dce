"""Offline English text for language models: corpus, word/char tokenizers, token windows.

Spec ``text[:path=FILE,tokens=word,vocab=2000,context=32,test=0.1]``:

- default corpus: Debian's ``fortunes`` package (``sudo apt-get install fortunes``), about
  2.5 MB of English quotations, jokes and definitions in plain-text files under
  ``/usr/share/games/fortunes`` (the ``.dat`` indexes and the ``ascii-art`` file are skipped);
  one document per fortune (entries are separated by a line ``%``). ``path=FILE`` reads any
  UTF-8 text file (or a folder of them) instead, one document per blank-line paragraph;
  ``encoding=NAME`` (e.g. ``latin-1``, ``utf-16``) reads another encoding. Files are decoded
  strictly: a binary or a file of another encoding is refused, never read with replacement
  characters.
- ``tokens=word``: lower-cased words (letters, digits, inner apostrophes), each punctuation mark
  and each line break a token; the vocabulary keeps the ``vocab − 2`` most frequent training
  tokens (ties by first appearance), the rest map to ``<unk>``: a frequency cap, so the rarest
  words of a Zipfian corpus share one id. ``tokens=char``: characters, capped the same way.
  Ids 0 and 1 are ``<unk>`` and ``<eod>`` (end of document).
- split: documents in a fixed random order (seed 0), the last ``test`` fraction (by count) is
  the test split; the tokenizer is fitted on the training documents only.
- windows: each split's token stream (documents joined by ``<eod>``) is cut into
  non-overlapping windows of ``context`` tokens; the target of a window is the same window
  shifted by one token (next-token prediction). ``x`` and ``y`` are int64 ``(windows, T)``.

:class:`TextDataset` offers the interface of :class:`compsde.nn.data.Dataset` (``train_batch``,
``test_batches``, ``image_shape`` = ``(T,)``, ``classes`` = vocabulary size), so every trainer
that takes ``--data`` takes ``text``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_int
from .data import DatasetNotAvailable

FORTUNES_DIR = "/usr/share/games/fortunes"
SKIPPED_FILES = ("ascii-art",)  # drawings, not prose
TOKEN_KINDS = ("word", "char")
UNK, EOD = 0, 1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|\n|[^\sa-z0-9]")


class TextNotAvailable(DatasetNotAvailable):
    """The text corpus is not on this machine; the message names the fix."""


# -- corpus -----------------------------------------------------------------------------------
_BOMS = ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"), (b"\xef\xbb\xbf", "utf-8-sig"))


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python has a codec of that name (ValueError naming ``encoding``)."""
    import codecs

    try:
        return codecs.lookup(str(encoding)).name
    except LookupError:
        raise ValueError(f"encoding of text must be a text encoding such as utf-8, latin-1 or "
                         f"utf-16, got {encoding!r}") from None


def _read(path: Path, encoding: str = "utf-8") -> str:
    """The text of ``path`` decoded strictly: a file that is not ``encoding`` text (a binary,
    another encoding) raises ValueError naming the file and the fix, never replacement
    characters."""
    data = path.read_bytes()
    if data.startswith(b"\x7fELF"):
        raise ValueError(f"text file {path} is an executable (ELF), not text; pass "
                         f"text:path=FILE of a text file")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        bom = next((name for mark, name in _BOMS if data.startswith(mark)), None)
        hint = (f"it starts with a {bom} byte-order mark: pass text:path=FILE,encoding={bom}"
                if bom else "convert it (e.g. iconv -f latin1 -t utf-8) or name its encoding "
                            "as text:path=FILE,encoding=latin-1")
        raise ValueError(f"text file {path} is not {encoding} text (byte "
                         f"0x{data[exc.start]:02x} at offset {exc.start} is invalid); "
                         f"{hint}") from None
    if "\x00" in text:
        raise ValueError(f"text file {path} holds NUL characters: a binary file or UTF-16 "
                         f"text, not {encoding} text (for UTF-16 pass encoding=utf-16)")
    return text


def fortune_documents(text: str) -> list[str]:
    """Split a fortune file into its entries (separated by lines holding only ``%``)."""
    return [d.strip("\n") for d in re.split(r"(?m)^%\s*$", text) if d.strip()]


def paragraph_documents(text: str) -> list[str]:
    """Split plain text into paragraphs (separated by blank lines)."""
    return [d.strip("\n") for d in re.split(r"\n\s*\n", text) if d.strip()]


def _fortune_files() -> list[Path]:
    root = Path(FORTUNES_DIR)
    if not root.is_dir():
        return []
    return sorted(f for f in root.glob("*") if f.is_file() and not f.is_symlink()
                  and f.suffix != ".dat" and f.name not in SKIPPED_FILES)


def _fortunes_message() -> str:
    return (f"English text not found in {FORTUNES_DIR}; install it with 'sudo apt-get install "
            f"fortunes' or pass text:path=FILE (any UTF-8 text file)")


def text_missing(path: str | os.PathLike | None = None) -> str | None:
    """Why the corpus of ``text[:path=...]`` is not on this machine (naming the command that
    installs the default one), or None when it is there; reads no text."""
    if path is None:
        return None if _fortune_files() else _fortunes_message()
    if Path(path).exists():
        return None
    return (f"text file {path} not found; pass text:path=FILE of an existing UTF-8 text file "
            f"(or install the default corpus with 'sudo apt-get install fortunes' and use "
            f"'text')")


def read_corpus(path: str | os.PathLike | None = None, encoding: str = "utf-8") -> list[str]:
    """The documents of the default corpus (``path`` None) or of the file/folder ``path``
    (decoded strictly as ``encoding``)."""
    if path is None:
        files = _fortune_files()
        if not files:
            raise TextNotAvailable(_fortunes_message())
        return [d for f in files for d in fortune_documents(_read(f))]
    target = Path(path)
    if target.is_dir():
        files = sorted(f for f in target.rglob("*") if f.is_file())
    elif target.is_file():
        files = [target]
    else:
        raise TextNotAvailable(text_missing(target) or f"text file {target} not found")
    encoding = check_encoding(encoding)
    documents = [d for f in files for d in paragraph_documents(_read(f, encoding))]
    if not documents:
        raise ValueError(f"text file {target} holds no text (empty or only whitespace)")
    return documents


# -- tokenizers -------------------------------------------------------------------------------
class Tokenizer:
    """Frequency-capped vocabulary over word or character tokens (module docstring)."""

    SPECIALS = ("<unk>", "<eod>")

    def __init__(self, kind: str, symbols: Sequence[str]):
        self.kind = check_choice("tokens", kind, TOKEN_KINDS)
        self.symbols = list(self.SPECIALS) + [s for s in symbols if s not in self.SPECIALS]
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def fit(cls, kind: str, documents: Iterable[str], vocab: int) -> Tokenizer:
        """The ``vocab − 2`` most frequent tokens of ``documents`` plus the two specials."""
        kind = check_choice("tokens", kind, TOKEN_KINDS)
        vocab = check_int("vocab", vocab, minimum=3)
        counts: Counter[str] = Counter()
        for doc in documents:
            counts.update(cls.split(kind, doc))
        return cls(kind, [s for s, _ in counts.most_common(vocab - len(cls.SPECIALS))])

    @staticmethod
    def split(kind: str, text: str) -> list[str]:
        """The token strings of ``text`` (words are lower-cased)."""
        return list(text) if kind == "char" else _WORD.findall(text.lower())

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; tokens outside the vocabulary become ``<unk>`` (0)."""
        return [self.index.get(s, UNK) for s in self.split(self.kind, text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: characters joined as they are, words by single spaces (none around
        line breaks); ``<eod>`` is written as a line ``%``."""
        pieces = [self.symbols[int(i)] for i in ids]
        pieces = ["\n%\n" if p == "<eod>" else p for p in pieces]
        if self.kind == "char":
            return "".join(pieces)
        out: list[str] = []
        for piece in pieces:
            if out and not out[-1].endswith("\n") and not piece.startswith("\n"):
                out.append(" ")
            out.append(piece)
        return "".join(out)

    def stream(self, documents: Iterable[str]) -> Tensor:
        """One int64 stream: each document's ids followed by ``<eod>``."""
        ids: list[int] = []
        for doc in documents:
            ids.extend(self.encode(doc))
            ids.append(EOD)
        return torch.tensor(ids, dtype=torch.int64)


def windows(stream: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping inputs ``(n, T)`` and next-token targets of a token stream."""
    context = check_int("context", context, minimum=1)
    n = (stream.numel() - 1) // context
    x = stream[:n * context].view(n, context)
    y = stream[1:n * context + 1].view(n, context)
    return x.contiguous(), y.contiguous()


# -- the data set -----------------------------------------------------------------------------
@dataclass
class TextDataset:
    """Token windows of a text corpus with the interface of :class:`compsde.nn.data.Dataset`."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    tokenizer: Tokenizer
    source: str

    @property
    def classes(self) -> int:
        """The vocabulary size (the output dimension of a language model)."""
        return len(self.tokenizer)

    @property
    def image_shape(self) -> tuple[int]:
        """``(T,)``: the shape of one input window (named as for image data sets)."""
        return (int(self.x_train.shape[1]),)

    @property
    def context(self) -> int:
        return int(self.x_train.shape[1])

    def _prepare(self, x: Tensor, device: torch.device | str) -> Tensor:
        return x.to(device)

    def train_batch(self, index: Tensor, device: torch.device | str = "cpu"
                    ) -> tuple[Tensor, Tensor]:
        """Input windows and their targets of the training windows ``index``."""
        return self.x_train[index].to(device), self.y_train[index].to(device)

    def test_batches(self, batch: int = 1000, device: torch.device | str = "cpu"
                     ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the whole test split in batches of windows."""
        for start in range(0, len(self.y_test), batch):
            yield (self.x_test[start:start + batch].to(device),
                   self.y_test[start:start + batch].to(device))


def load_text(path: str | None = None, tokens: str = "word", vocab: int = 2000,
              context: int = 32, test: float = 0.1, encoding: str = "utf-8") -> TextDataset:
    """Read, split, tokenize and window a corpus (module docstring)."""
    tokens = check_choice("tokens", tokens, TOKEN_KINDS)
    vocab = check_int("vocab", vocab, minimum=3)
    context = check_int("context", context, minimum=1)
    test = check_float("test", test, low=0.0, high=1.0, low_open=True, high_open=True)
    documents = read_corpus(path, encoding)
    source = path or FORTUNES_DIR
    if len(documents) < 2:
        raise ValueError(f"text {source} holds {len(documents)} document; a train/test split "
                         f"needs at least 2 (paragraphs separated by blank lines)")
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(0)).tolist()
    cut = min(len(documents) - 1, max(1, round(len(documents) * (1 - test))))
    train_docs = [documents[i] for i in order[:cut]]
    test_docs = [documents[i] for i in order[cut:]]
    tokenizer = Tokenizer.fit(tokens, train_docs, vocab)
    x_train, y_train = windows(tokenizer.stream(train_docs), context)
    x_test, y_test = windows(tokenizer.stream(test_docs), context)
    if len(y_train) == 0 or len(y_test) == 0:
        raise ValueError(f"text {source} is too short for context {context}: "
                         f"{len(y_train)} training and {len(y_test)} test windows; use a "
                         f"longer text or a smaller context")
    return TextDataset("text", x_train, y_train, x_test, y_test, tokenizer, str(source))


def load_text_spec(options: dict[str, str]) -> TextDataset:
    """:func:`load_text` from the options of a ``text:...`` spec (values still strings)."""
    try:
        test = float(options.get("test", 0.1))
    except ValueError:
        raise ValueError(f"test of text must be a number in (0, 1), got "
                         f"{options['test']!r}") from None
    return load_text(options.get("path"), options.get("tokens", "word"),
                     check_int("vocab", options.get("vocab", 2000), minimum=3),
                     check_int("context", options.get("context", 32), minimum=1), test,
                     options.get("encoding", "utf-8"))
