import json

import mlflow
import numpy as np
import pytest
import torch

from core import tracking
from etl.text.slices import token_slices
from etl.tokens import special_tokens, wrap_text
from tests.etl.text_fixtures import SCHEMA
from training.lm import convert_smollm2
from training.lm.backbone import (
    BackboneError,
    add_special_tokens,
    ensure_pad_token,
    load_backbone,
    log_backbone,
    save_backbone,
)
from training.lm.tiny import tiny_llama, tiny_tokenizer

SLICES = token_slices(SCHEMA)  # the synthetic world's declared slices
TEXTS = [wrap_text("POI_name", "Aunt Li's Claypot") + wrap_text("POI_loc", "Guangzhou"), "a cold noodle shop"]


def logits(model, tokenizer, texts=TEXTS):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture()
def backbone():
    tokenizer = tiny_tokenizer()
    return tiny_llama(tokenizer), tokenizer


def test_special_tokens_are_added_once_and_each_encodes_to_one_id(backbone):
    model, tokenizer = backbone
    before = len(tokenizer)
    assert tokenizer.pad_token is None
    added = add_special_tokens(model, tokenizer, SLICES)
    assert added == len(special_tokens(SLICES))
    assert len(tokenizer) == before + added == model.get_input_embeddings().weight.shape[0]
    assert model.config.vocab_size == len(tokenizer)
    assert add_special_tokens(model, tokenizer, SLICES) == 0
    assert len(tokenizer) == before + added == model.get_input_embeddings().weight.shape[0]
    ids = set()
    for token in special_tokens(SLICES):
        encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert encoded == [tokenizer.convert_tokens_to_ids(token)], token
        ids.update(encoded)
    assert len(ids) == len(special_tokens(SLICES))
    # inside text too, and decoding without special tokens drops them
    encoded = tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert encoded[0] == tokenizer.convert_tokens_to_ids("<POI_name>")
    assert encoded[-1] == tokenizer.convert_tokens_to_ids("</POI_loc>")
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "Aunt Li's ClaypotGuangzhou"
    assert (tokenizer.pad_token, tokenizer.padding_side) == (tokenizer.eos_token, "right")
    assert model.config.pad_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize("tied", [True, False])
def test_new_rows_are_the_mean_of_the_old_rows(tied):
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, tie_word_embeddings=tied)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    rows = old_in.shape[0]
    added = add_special_tokens(model, tokenizer, SLICES)
    new_in = model.get_input_embeddings().weight.detach()
    new_out = model.get_output_embeddings().weight.detach()
    torch.testing.assert_close(new_in[:rows], old_in, rtol=0, atol=0)
    torch.testing.assert_close(new_in[rows:], old_in.mean(0).expand(added, -1))
    torch.testing.assert_close(new_out[:rows], old_out, rtol=0, atol=0)
    torch.testing.assert_close(new_out[rows:], old_out.mean(0).expand(added, -1))
    assert (new_out.data_ptr() == new_in.data_ptr()) is tied
    if not tied:
        assert not torch.allclose(old_in.mean(0), old_out.mean(0))


def test_save_and_load_round_trip_gives_the_same_logits(backbone, tmp_path):
    model, tokenizer = backbone
    add_special_tokens(model, tokenizer, SLICES)
    expected = logits(model, tokenizer)
    save_backbone(model, tokenizer, tmp_path / "ckpt")
    loaded, loaded_tokenizer = load_backbone(tmp_path / "ckpt")
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert add_special_tokens(loaded, loaded_tokenizer, SLICES) == 0
    assert loaded_tokenizer.padding_side == "right"
    torch.testing.assert_close(logits(loaded, loaded_tokenizer), expected, rtol=0, atol=0)


def test_right_padding_keeps_each_text_logits(backbone):
    model, tokenizer = backbone
    add_special_tokens(model, tokenizer, SLICES)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    padded = logits(model, tokenizer)
    for row, text in enumerate(TEXTS):
        alone = logits(model, tokenizer, [text])[0]
        length = int(batch["attention_mask"][row].sum())
        torch.testing.assert_close(padded[row, :length], alone, rtol=1e-5, atol=1e-5)


def test_load_from_an_mlflow_run_uri(backbone, lakehouse):
    model, tokenizer = backbone
    add_special_tokens(model, tokenizer, SLICES)
    tracking.configure(str(lakehouse))  # sqlite in the temp lakehouse
    artifacts = lakehouse / "artifacts"
    experiment_id = mlflow.create_experiment("backbone-unit", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment_id) as run:
        uri = log_backbone(model, tokenizer)
    assert uri == f"runs:/{run.info.run_id}/backbone"
    assert (artifacts / run.info.run_id / "artifacts" / "backbone" / "tokenizer.json").is_file()
    for source in (uri, f"runs:/{run.info.run_id}/"):  # the folder itself, or the run above it
        loaded, loaded_tokenizer = load_backbone(source)
        torch.testing.assert_close(logits(loaded, loaded_tokenizer), logits(model, tokenizer), rtol=0, atol=0)
    with mlflow.start_run(experiment_id=experiment_id) as empty:
        mlflow.log_text("no model here", "notes.txt")
    with pytest.raises(BackboneError, match="no folder with a config.json"):
        load_backbone(f"runs:/{empty.info.run_id}/")


def test_a_folder_that_is_no_model_is_one_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(tmp_path)


def test_rebuild_checks_every_weight(backbone):
    model, _ = backbone
    state = model.state_dict()
    rebuilt = convert_smollm2.rebuild(model.config, {k: v for k, v in state.items() if k != "lm_head.weight"})
    assert (
        rebuilt.get_output_embeddings().weight.data_ptr() == rebuilt.get_input_embeddings().weight.data_ptr()
    )
    with pytest.raises(convert_smollm2.ConversionError, match="missing.*norm"):
        convert_smollm2.rebuild(model.config, {k: v for k, v in state.items() if k != "model.norm.weight"})


def test_the_smollm2_gguf_is_found_through_the_package_metadata():
    path = convert_smollm2.find_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    with open(path, "rb") as handle:
        assert handle.read(4) == b"GGUF"
    with pytest.raises(convert_smollm2.ConversionError, match="not installed"):
        convert_smollm2.find_gguf(package="no-such-package-larr")


def write_gguf(model, tokenizer, path):
    """A float32 llama GGUF as llama.cpp's converter writes it (q/k rows permuted)."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(len(tokenizer))
    writer.add_tokenizer_model("gpt2")
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    writer.add_token_list([token for token, _ in vocab])
    special = set(tokenizer.all_special_tokens)
    writer.add_token_types([3 if token in special else 1 for token, _ in vocab])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)

    def permute(w, heads):  # HF -> llama.cpp rotary layout
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {
        "self_attn.o_proj": "attn_output",
        "self_attn.v_proj": "attn_v",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    state = {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        writer.add_tensor(
            f"blk.{i}.attn_q.weight",
            permute(state[prefix + "self_attn.q_proj.weight"], config.num_attention_heads),
        )
        writer.add_tensor(
            f"blk.{i}.attn_k.weight",
            permute(state[prefix + "self_attn.k_proj.weight"], config.num_key_value_heads),
        )
        for hf, gg in names.items():
            writer.add_tensor(f"blk.{i}.{gg}.weight", state[f"{prefix}{hf}.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_conversion_of_a_gguf_gives_the_same_model_and_runs_once(backbone, tmp_path):
    model, tokenizer = backbone
    ensure_pad_token(model, tokenizer)
    gguf_path = tmp_path / "tiny.gguf"
    write_gguf(model, tokenizer, gguf_path)
    out = tmp_path / "models" / "tiny"
    first = convert_smollm2.convert(gguf_path, out)
    assert first["converted"] and first["parameters"] == sum(p.numel() for p in model.parameters())
    assert not (out.parent / ".tiny.partial").exists()
    loaded, loaded_tokenizer = load_backbone(out)
    assert loaded_tokenizer.tokenize(TEXTS[1]) == tokenizer.tokenize(TEXTS[1])
    torch.testing.assert_close(
        logits(loaded, loaded_tokenizer), logits(model, tokenizer), rtol=1e-5, atol=1e-5
    )
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert convert_smollm2.convert(gguf_path, out) == {
        "out": str(out),
        "converted": False,
        "reason": "already converted",
        "seconds": 0.0,
    }
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert convert_smollm2.convert(gguf_path, out, force=True)["converted"]


def test_conversion_refuses_to_overwrite_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(convert_smollm2.ConversionError, match="not written by this converter"):
        convert_smollm2.convert(tmp_path / "any.gguf", foreign)
    assert (foreign / "notes.txt").read_text() == "keep"
