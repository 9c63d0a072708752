"""The pooled token's attention over a scene, against the last layer's attention recomputed by
hand from its input hidden states (RMSNorm, q/k projections, rotary embedding, softmax)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from etl.tokens import wrap_text
from features.attention import scene_attention
from features.embeddings.encoder_runtime import resolve_encoder
from tests.features.builders import tiny_encoder_model

TEXT = wrap_text("user_env", "a user visiting Chengdu on vacation")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder, _, _ = tiny_encoder_model(tmp_path_factory.mktemp("enc") / "model", max_length=64)
    return resolve_encoder(str(folder))[1]


def _reference(encoder, text: str) -> np.ndarray:
    """The last token's softmax row in the last layer, mean over heads, computed from the layer's input."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    backbone = encoder.model
    ids = torch.tensor([encoder.tokenizer(text, add_special_tokens=False)["input_ids"]])
    n = ids.shape[1]
    with torch.no_grad():
        hidden = backbone(input_ids=ids, output_hidden_states=True).hidden_states[-2]  # into the last layer
        attention = backbone.layers[-1].self_attn
        x = backbone.layers[-1].input_layernorm(hidden)
        d = attention.head_dim
        q = attention.q_proj(x).view(1, n, -1, d).transpose(1, 2)  # (1, heads, n, d)
        k = attention.k_proj(x).view(1, n, -1, d).transpose(1, 2)  # (1, kv heads, n, d)
        cos, sin = backbone.rotary_emb(x, torch.arange(n)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = repeat_kv(k, attention.num_key_value_groups)
        scores = (
            q[0, :, -1:, :] @ k[0].transpose(-1, -2) / math.sqrt(d)
        )  # (heads, 1, n): the last row sees all
        return torch.softmax(scores, dim=-1)[:, 0, :].mean(dim=0).numpy()


def test_weights_are_the_last_layers_attention_of_the_closing_token(encoder):
    frame = scene_attention(encoder, TEXT)
    assert list(frame.columns) == ["position", "token", "weight", "special"]
    assert "".join(frame["token"]) == TEXT  # every token, in order
    assert frame["token"].iloc[0] == "<user_env>" and frame["token"].iloc[-1] == "</user_env>"
    assert frame["special"].tolist() == [True] + [False] * (len(frame) - 2) + [True]
    assert (frame["weight"] >= 0).all() and frame["weight"].sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(frame["weight"], _reference(encoder, TEXT), atol=1e-6)
    first = scene_attention(encoder, TEXT, layer=0)
    assert not np.allclose(first["weight"], frame["weight"], atol=1e-4)  # the layer is honoured


def test_the_encoder_is_left_as_it_was(encoder):
    before = encoder.embed([TEXT])[0]
    implementation = encoder.model.config._attn_implementation
    scene_attention(encoder, TEXT)
    assert encoder.model.config._attn_implementation == implementation
    assert np.array_equal(encoder.embed([TEXT])[0], before)


def test_a_long_text_is_cut_in_the_middle_as_the_encoder_embeds_it(encoder):
    long = wrap_text("user_env", " ".join(["hot pot"] * 60))
    frame = scene_attention(encoder, long)
    assert len(frame) == 64 and frame["token"].iloc[-1] == "</user_env>"
    assert frame["token"].iloc[0] == "<user_env>"
    with pytest.raises(ValueError, match="empty text"):
        scene_attention(encoder, "")
    assert isinstance(frame, pd.DataFrame)
