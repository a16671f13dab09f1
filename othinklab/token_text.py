"""Readable text for each sampled token, for the rollout log and the rollout inspector.

Why: byte-level BPE (Qwen2's tokenizer) splits a multi-byte character such as "é" or "世" over several
tokens, and decoding one such token alone gives U+FFFD ("�"). Here the tokens' raw bytes are decoded
together: a character shows on the token that completes it (the tokens before it in the same character get
""), so the pieces stay aligned one-to-one with the per-token log-probs and KL, and joined they are the
completion's text. Bytes that never complete a character (a completion cut off mid-character, or an invalid
sequence) show as escapes such as `\\xe4`, never as "�".
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Sequence
from typing import Any

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (transformers' `bytes_to_unicode`), reversed: the printable character that
    stands for each byte -> the byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(tokenizer: Any, ids: Sequence[int]) -> list[bytes]:
    """Each token's raw bytes: byte-level BPE pieces mapped back through the byte alphabet, SentencePiece
    byte-fallback pieces (`<0xE4>`) as their byte, anything else as its decoded UTF-8."""
    table = byte_decoder()
    out = []
    for i, piece in zip(ids, tokenizer.convert_ids_to_tokens(list(ids))):
        piece = piece or ""
        if m := _BYTE_FALLBACK.fullmatch(piece):
            out.append(bytes([int(m.group(1), 16)]))
        elif piece and all(c in table for c in piece):
            out.append(bytes(table[c] for c in piece))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out


def readable_pieces(pieces: Sequence[bytes]) -> list[str]:
    """One string per token: characters split over tokens appear on the token that completes them, bytes that
    never decode as `\\xNN` escapes.

    >>> readable_pieces([b"h", b"\\xc3", b"\\xa9", b" \\xe4\\xb8", b"\\x96"])
    ['h', '', 'é', ' ', '世']
    >>> readable_pieces([b"a", b"\\xe4\\xb8"])  # cut off mid-character
    ['a', '\\\\xe4\\\\xb8']
    >>> readable_pieces([b"\\xff", b"ok"])  # invalid in UTF-8
    ['\\\\xff', 'ok']
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    out: list[str] = []
    for piece in pieces:
        pending = decoder.getstate()[0]
        try:
            out.append(decoder.decode(piece))
        except UnicodeDecodeError:
            decoder.reset()
            out.append((pending + piece).decode("utf-8", "backslashreplace"))
    tail = decoder.getstate()[0]
    if tail and out:
        out[-1] += tail.decode("utf-8", "backslashreplace")
    return out


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """`readable_pieces` of the tokens `ids`: what the rollout log stores as a completion's `tokens`."""
    return readable_pieces(token_bytes(tokenizer, ids))


def merge_for_display(tokens: Sequence[str], values: Sequence[float | None]) -> list[tuple[str, float | None]]:
    """Glue each run of empty pieces onto the piece that completes the character, summing their values (the
    log-prob of a character is the sum of its tokens' log-probs; so is the KL estimate's contribution).

    >>> merge_for_display(["a", "", "é"], [-0.5, -1.0, -0.25])
    [('a', -0.5), ('é', -1.25)]
    """
    out: list[tuple[str, float | None]] = []
    carry: float | None = None
    for tok, v in zip(tokens, values):
        if v is not None and carry is not None:
            v = v + carry
        elif v is None:
            v = carry
        if tok == "":
            carry = v
            continue
        out.append((tok, v))
        carry = None
    if carry is not None and out:
        out[-1] = (out[-1][0], (out[-1][1] or 0.0) + carry)
    return out
