"""The umT5 tokenizer: the same ids whether it ships as a folder (release) or embedded
(ComfyUI), the release's text cleaning, and clear errors."""

from __future__ import annotations

import pytest
import text_factory as tf
import torch
from safetensors.torch import load_file

from wan_core.errors import WanUserError
from wan_core.tokenizer import UMT5Tokenizer, clean_text

TEXTS = [
    "a cat walks slowly across the sunny garden",
    "  Ünïcödé   café &amp;amp; <b>tag</b>\n\t123 456  ",
    tf.sample_text(60, seed=3),
    "",
]


@pytest.fixture(scope="module")
def folder_tokenizer(tmp_path_factory):
    return UMT5Tokenizer.from_folder(tf.write_tokenizer_folder(tmp_path_factory.mktemp("tok") / "umt5-xxl"))


def test_embedded_the_comfyui_way_and_shipped_as_a_folder_give_identical_ids(tmp_path, folder_tokenizer):
    # Round trip through a real ComfyUI-layout file, as the loader reads it.
    path = tf.write_comfy_safetensors(tmp_path / "te.safetensors", tf.reference_model())
    embedded = UMT5Tokenizer.from_tensor(load_file(str(path))["spiece_model"], "te.safetensors")
    assert embedded.serialized() == folder_tokenizer.serialized()
    assert embedded(TEXTS) == folder_tokenizer(TEXTS)
    assert all(ids[-1] == 1 for ids in folder_tokenizer(TEXTS))  # T5's end token closes every prompt


def test_ids_match_comfyui_spiece_tokenizer(folder_tokenizer):
    # ComfyUI's own reader of the embedded tokenizer (sentencepiece with add_eos) on cleaned text.
    from comfy_inprocess import comfy

    comfy()
    from comfy.text_encoders.spiece_tokenizer import SPieceTokenizer

    theirs = SPieceTokenizer(tf.spiece_tensor(tf.tiny_spiece_model()))
    for text in TEXTS:
        assert folder_tokenizer.tokenize(text) == theirs(clean_text(text))["input_ids"]


def test_cleaning_unescapes_html_twice_and_collapses_whitespace():
    assert clean_text("  fish &amp;amp; chips\n\n\tnow  ") == "fish & chips now"
    assert clean_text("&lt;b&gt;") == "<b>"


def test_truncation_keeps_the_end_token(folder_tokenizer):
    short = UMT5Tokenizer(folder_tokenizer.serialized(), "short", max_length=8)
    ids = short.tokenize(tf.sample_text(30))
    assert len(ids) == 8 and ids[-1] == short.eos_id
    assert ids[:7] == folder_tokenizer.tokenize(tf.sample_text(30))[:7]


def test_folder_without_tokenizer_says_what_to_do(tmp_path):
    with pytest.raises(WanUserError, match="no umT5 tokenizer here.*spiece.model.*google/umt5-xxl"):
        UMT5Tokenizer.from_folder(tmp_path)


def test_a_file_that_is_no_sentencepiece_model_is_refused(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(WanUserError, match="not a sentencepiece tokenizer model"):
        UMT5Tokenizer.from_folder(tmp_path)
    with pytest.raises(WanUserError, match="not a sentencepiece tokenizer model"):
        UMT5Tokenizer.from_tensor(torch.zeros(4, dtype=torch.uint8), "x.safetensors (embedded spiece_model)")
