import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from etl.tokens import wrap_text
from features.embeddings import encoder_runtime
from features.embeddings.encoder_runtime import EmbedError, choose_device, get_encoder, resolve_encoder
from features.embeddings.udf import embed_batches
from tests.features.builders import tiny_encoder_model
from training.embedding.encoder import encode_texts
from training.embedding.pooling import closing_token_positions

MAX_LENGTH = 10


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_encoder_model(tmp_path_factory.mktemp("enc") / "model", max_length=MAX_LENGTH)


def test_device_follows_the_task_gpu_resources():
    assert choose_device([], cuda_available=True, bf16_supported=True) == ("cpu", "float32")
    assert choose_device(["0"], cuda_available=False, bf16_supported=False) == ("cpu", "float32")
    assert choose_device(["1"], cuda_available=True, bf16_supported=True) == ("cuda:1", "bfloat16")
    assert choose_device(["1"], cuda_available=True, bf16_supported=False) == ("cuda:1", "float16")
    # the task's GPU is the only visible one, or one of a list: its index in the list
    assert choose_device(["3"], True, True, visible_devices="3") == ("cuda:0", "bfloat16")
    assert choose_device(["3"], True, True, visible_devices="2,3") == ("cuda:1", "bfloat16")
    assert choose_device(["0"], True, True, precision="float32") == ("cuda:0", "float32")
    with pytest.raises(ValueError, match="precision"):
        choose_device([], False, False, precision="int8")


def test_outside_a_task_the_device_is_the_cpu():
    assert encoder_runtime.task_device() == ("cpu", "float32")


def test_bad_encoder_uris_are_one_clear_error(tmp_path, tiny):
    with pytest.raises(EmbedError, match="set encoder="):
        resolve_encoder("")
    with pytest.raises(EmbedError, match=f"encoder {tmp_path / 'nope'} does not exist"):
        resolve_encoder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedError, match="no MLmodel"):
        resolve_encoder(str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny[0], broken)
    (broken / "artifacts" / "encoder" / "projection.pt").write_bytes(b"not a tensor")
    with pytest.raises(EmbedError, match=f"encoder {broken} does not load"):
        resolve_encoder(str(broken))


def test_version_is_a_content_hash(tmp_path, tiny):
    ref, model = resolve_encoder(str(tiny[0]))
    assert ref.version.startswith("enc-") and len(ref.version) == 20
    assert (ref.dim, ref.max_length) == (16, MAX_LENGTH)
    copy = shutil.copytree(tiny[0], tmp_path / "copy")
    assert resolve_encoder(str(copy))[0].version == ref.version  # same content, other place
    inner = resolve_encoder(str(copy / "artifacts" / "encoder"))[0]  # the bare artifact folder
    assert inner.version == ref.version and inner.load_uri == str(copy)
    other = tiny_encoder_model(tmp_path / "other", max_length=MAX_LENGTH, seed=1)[0]
    assert resolve_encoder(str(other))[0].version != ref.version


def test_the_encoder_is_loaded_once_per_process_not_per_batch(tiny):
    ref, _ = resolve_encoder(str(tiny[0]))
    before = encoder_runtime.LOADS["count"]
    texts = [wrap_text("scene_weather", w) for w in ("rainy", "sunny", "snowy", "foggy", "windy")]
    batches = [pd.Series(texts[i : i + 2]) for i in range(0, 5, 2)]
    out = list(embed_batches(iter(batches), ref, batch_size=2))
    again = list(embed_batches(iter(batches), ref, batch_size=2))  # a second task in the same worker
    assert encoder_runtime.LOADS["count"] - before == 1
    assert get_encoder(ref) is get_encoder(ref)
    assert [len(f) for f in out] == [2, 2, 1]
    for first, second in zip(out, again, strict=True):
        assert np.allclose(np.stack(first["vector"]), np.stack(second["vector"]))


def _at_closing_token(encoder, tokenizer, text: str, closing: str) -> torch.Tensor:
    """The reference: run the text alone, take the hidden state at the closing token, project."""
    ids = tokenizer([text], add_special_tokens=False, return_tensors="pt")["input_ids"]
    token_id = tokenizer.convert_tokens_to_ids(closing)
    with torch.no_grad():
        hidden = encoder.backbone.base_model(input_ids=ids).last_hidden_state
        position = closing_token_positions(ids, token_id, closing)
        assert position.item() == ids.shape[1] - 1
        pooled = hidden[0, position.item()]
        return torch.nn.functional.normalize(encoder.projection(pooled), dim=-1)


def test_pooling_reads_the_closing_token_under_left_and_right_padding(tiny):
    folder, encoder, tokenizer = tiny
    model = get_encoder(resolve_encoder(str(folder))[0])
    texts = [
        wrap_text("scene_weather", "rainy"),
        wrap_text("scene_city", "Guangzhou"),
        wrap_text("scene_time_slot", "lunch"),
    ]
    closings = ["</scene_weather>", "</scene_city>", "</scene_time_slot>"]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert len(set(lengths)) > 1 and max(lengths) <= MAX_LENGTH  # mixed lengths: real padding
    expected = torch.stack(
        [_at_closing_token(encoder, tokenizer, t, c) for t, c in zip(texts, closings, strict=True)]
    )
    for side in ("right", "left"):
        got, truncated = model.embed(texts, batch_size=3, padding_side=side)
        assert not truncated.any()
        assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5), side


def test_a_long_text_is_cut_in_the_middle_keeping_its_closing_token(tiny):
    folder, encoder, tokenizer = tiny
    model = get_encoder(resolve_encoder(str(folder))[0])
    long_text = wrap_text("scene_city", "Guangzhou " * 20)
    ids = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert len(ids) > MAX_LENGTH
    cut = ids[: MAX_LENGTH // 2] + ids[-(MAX_LENGTH // 2) :]
    assert cut[-1] == tokenizer.convert_tokens_to_ids("</scene_city>")
    with torch.no_grad():
        hidden = encoder.backbone.base_model(input_ids=torch.tensor([cut])).last_hidden_state[0, -1]
        expected = torch.nn.functional.normalize(encoder.projection(hidden), dim=-1)
    got, truncated = model.embed([long_text, wrap_text("scene_city", "Chengdu")], batch_size=2)
    assert truncated.tolist() == [True, False]
    assert torch.allclose(torch.from_numpy(got[0]), expected, atol=1e-5)
    direct = encode_texts(encoder, tokenizer, [long_text], max_length=MAX_LENGTH)  # stage 2's own maths
    assert torch.allclose(torch.from_numpy(got[:1]), direct, atol=1e-5)


def test_null_and_blank_texts_get_no_vector_and_do_not_fail(tiny):
    model = get_encoder(resolve_encoder(str(tiny[0]))[0])
    frame = encoder_runtime.embed_series(model, pd.Series(["<scene_city>A</scene_city>", None, "  "]), 4)
    assert frame["vector"].isna().tolist() == [False, True, True]
    assert frame["vector"][0].shape == (16,) and frame["truncated"].tolist() == [False, False, False]
