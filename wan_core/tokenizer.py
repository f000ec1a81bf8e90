"""The umT5 tokenizer: sentencepiece, with the release's text cleaning and 512-token limit.

The model comes from a tokenizer folder (the release's `google/umt5-xxl`, or a Hugging Face
folder: `spiece.model`) or from the `spiece_model` uint8 tensor that ComfyUI embeds in its
repackaged text encoder files; both hold the same serialized sentencepiece proto.

Cleaning follows the release: ftfy when installed, HTML entities unescaped twice (doubly-escaped
captions are common), whitespace runs collapsed to one space, ends stripped. Each prompt ends with
the end-of-sequence token; longer prompts are cut to 512 tokens (end token included) with a warning.
"""

from __future__ import annotations

import html
import logging
import os
import re
from pathlib import Path

import torch

from .config import TEXT_LEN
from .errors import WanUserError

log = logging.getLogger(__name__)

TOKENIZER_MODEL_NAMES = ("spiece.model", "tokenizer.model")

try:
    import ftfy
except ImportError:  # optional, as in the release
    ftfy = None


def clean_text(text: str) -> str:
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class UMT5Tokenizer:
    def __init__(self, model_proto: bytes, source: str, max_length: int = TEXT_LEN):
        import sentencepiece

        self.source = source
        self.max_length = max_length
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as e:
            raise WanUserError(
                f"{source}: is not a sentencepiece tokenizer model ({str(e).splitlines()[0]}). Use the "
                f"spiece.model of google/umt5-xxl."
            ) from None
        self.eos_id = self.sp.eos_id()
        if self.eos_id < 0:
            raise WanUserError(f"{source}: this sentencepiece model has no end-of-sequence token; not a umT5 tokenizer.")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, max_length: int = TEXT_LEN) -> UMT5Tokenizer:
        folder = Path(folder)
        model_file = folder if folder.is_file() else next(
            (folder / n for n in TOKENIZER_MODEL_NAMES if (folder / n).is_file()), None
        )
        if model_file is None:
            raise WanUserError(
                f"{folder}: no umT5 tokenizer here (looked for {' or '.join(TOKENIZER_MODEL_NAMES)}). Point the "
                f"loader at the release's google/umt5-xxl tokenizer folder."
            )
        return cls(model_file.read_bytes(), str(model_file), max_length)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, source: str, max_length: int = TEXT_LEN) -> UMT5Tokenizer:
        """From ComfyUI's embedded `spiece_model` (the proto's bytes as a uint8 tensor)."""
        return cls(tensor.to(torch.uint8).contiguous().numpy().tobytes(), source, max_length)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def serialized(self) -> bytes:
        return self.sp.serialized_model_proto()

    def tokenize(self, text: str) -> list[int]:
        """Token ids of one prompt, end token included, at most max_length of them."""
        ids = self.sp.encode(clean_text(text)) + [self.eos_id]
        if len(ids) > self.max_length:
            cut = len(ids) - self.max_length
            preview = text if len(text) <= 60 else text[:57] + "..."
            log.warning(
                "[ComfyUI-Wan22] prompt %r is %d tokens; umT5 reads %d: the last %d tokens were cut.",
                preview, len(ids), self.max_length, cut,
            )
            ids = ids[: self.max_length - 1] + [self.eos_id]
        return ids

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [self.tokenize(t) for t in texts]
