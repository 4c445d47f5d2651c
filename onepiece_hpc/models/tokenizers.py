"""Small tokenizers written locally, so built-in models need no download."""

from __future__ import annotations

import string

from transformers import CLIPTokenizer, T5Tokenizer


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins a byte-level BPE uses for the bytes 0..255."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, shift = [], 0
    for byte in range(256):
        if byte in keep:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shift))
            shift += 1
    return symbols


def tiny_clip_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every byte is a token, words end in </w>."""
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A unigram T5 tokenizer over letters, digits and punctuation, with word-start pieces."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    pieces += [("\u2581" + c, -1.0) for c in chars]
    pieces += [(c, -2.0) for c in chars]
    pieces.append(("\u2581", -3.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0)
