"""OpenCLIP's "simple" byte-level BPE tokenizer, the one the text tower was trained with (spec §3.1).

Behaviour (open_clip 2.22 `tokenize`, which the original calls): the text is repaired with ftfy, HTML-unescaped
twice, whitespace-collapsed and lower-cased; a regex splits it into words, numbers (one digit each) and runs of
punctuation; each piece is mapped byte-wise onto printable unicode characters and merged with the ranked BPE
merges of `bpe_simple_vocab_16e6.txt.gz` (bundled, MIT). A prompt becomes `[SOT] + pieces + [EOT]`, zero-padded to
77 ids; a longer one is cut to 77 with EOT written over the last id.
"""

from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path

import ftfy
import regex
import torch

VOCAB_PATH = Path(__file__).resolve().parents[1] / "data" / "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
SOT_TOKEN, EOT_TOKEN = "<start_of_text>", "<end_of_text>"
SOT_ID, EOT_ID, PAD_ID = 49406, 49407, 0
END_OF_WORD = "</w>"
# open_clip reads this many merges after the file's header line: 49152 ids minus 256 byte symbols and 2 specials.
NUM_MERGES = 49152 - 256 - 2

# Special tokens come first so a literal "<start_of_text>" in a prompt maps to its id (as in open_clip); the
# contractions are split off words; a letter run, a single digit, or a run of other non-space symbols is a piece.
PIECE_PATTERN = regex.compile(
    rf"{SOT_TOKEN}|{EOT_TOKEN}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
    regex.IGNORECASE,
)


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """Map each byte 0..255 to a printable character: printable Latin-1 bytes map to themselves, the rest to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # The id order of the byte symbols is the printable bytes first, then the remapped ones (dict insertion order).
    return table


def clean_text(text: str) -> str:
    """ftfy repair, HTML-unescape twice, collapse whitespace, lower-case (the normalisation open_clip applies)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class BPETokenizer:
    """Byte-level BPE over a gzipped merges file; `encode` gives the ids of one text without SOT/EOT."""

    def __init__(self, vocab_path: str | Path = VOCAB_PATH):
        vocab_path = Path(vocab_path)
        if not vocab_path.is_file():
            raise FileNotFoundError(f"CLIP BPE vocabulary {vocab_path} is missing; it ships with the package as "
                                    "cami2v_core/data/bpe_simple_vocab_16e6.txt.gz (reinstall, or copy it from the "
                                    "open_clip_torch wheel)")
        lines = gzip.open(vocab_path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:1 + NUM_MERGES]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{vocab_path} does not look like bpe_simple_vocab_16e6.txt.gz: expected {NUM_MERGES} "
                             f"merge lines of two symbols after the header, found {len(merges)}")
        symbols = list(byte_to_unicode().values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {piece: i for i, piece in enumerate(vocab)}
        self.decoder = {i: piece for piece, i in self.encoder.items()}
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self._cache: dict[str, list[str]] = {SOT_TOKEN: [SOT_TOKEN], EOT_TOKEN: [EOT_TOKEN]}

    @property
    def vocab_size(self) -> int:
        """Number of ids (49408 for the bundled vocabulary)."""
        return len(self.encoder)

    def bpe(self, piece: str) -> list[str]:
        """Split one byte-mapped piece into vocabulary symbols; the last symbol carries the end-of-word mark."""
        if piece in self._cache:
            return self._cache[piece]
        word = [*piece[:-1], piece[-1] + END_OF_WORD]
        while len(word) > 1:
            # Apply the best-ranked merge present, to every non-overlapping occurrence from left to right.
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self.merge_rank.get(pair, float("inf")))
            if best not in self.merge_rank:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[piece] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without SOT/EOT and without truncation."""
        ids = []
        for piece in PIECE_PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(mapped))
        return ids

    def decode(self, ids) -> str:
        """Text of a list of ids (SOT/EOT appear as their names, word ends as spaces); for inspection only."""
        text = "".join(self.decoder[int(i)] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text.replace(SOT_TOKEN, "").replace(EOT_TOKEN, ""))
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> BPETokenizer:
    """The bundled tokenizer, read on first use and cached for the process."""
    return BPETokenizer(VOCAB_PATH)


def tokenize(texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """[SOT] + BPE ids + [EOT], zero-padded or truncated (EOT kept last) to context_length. -> [B, 77] int64"""
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(t, str) for t in texts):
        found = sorted({type(t).__name__ for t in texts if not isinstance(t, str)})
        raise TypeError(f"tokenize expects a string or a list of strings, found elements of type {', '.join(found)}")
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2 (room for SOT and EOT), got {context_length}")
    tokenizer = get_tokenizer()
    out = torch.full((len(texts), context_length), PAD_ID, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [SOT_ID, *tokenizer.encode(text), EOT_ID]
        if len(ids) > context_length:
            ids = ids[:context_length - 1] + [EOT_ID]
        out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


__all__ = ["tokenize", "get_tokenizer", "BPETokenizer", "clean_text", "byte_to_unicode", "CONTEXT_LENGTH",
           "SOT_ID", "EOT_ID", "PAD_ID", "VOCAB_PATH"]
