"""The P5-style prompts and model: prompt text, answer tokens, logits as a three-way softmax,
left padding, truncation, training and freezing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.dataset_schema import sample_fields
from tests.etl.text_fixtures import SCHEMA
from training.ctr.encoding import EncodingConfig, build_layout
from training.ctr.inputs import CtrInputs
from training.ctr.models.p5 import ANSWER_WORDS, P5Error, P5Model, answer_token_ids, build_p5
from training.ctr.prompts import PromptError, build_prompts, prompt_columns
from training.lm.backbone import save_backbone
from training.lm.tiny import tiny_llama, tiny_tokenizer

SCENE_FEATURES = SCHEMA.scene_names
LAYOUT = build_layout(EncodingConfig(), sample_fields(SCHEMA), SCENE_FEATURES, with_scene=False)
SCENE_VALUES = {
    "city": ("Guangzhou", "Chengdu", "Beijing"),
    "district_type": ("business district", "residential"),
    "time_slot": ("lunch", "dinner", "late night"),
    "day_type": ("weekday", "weekend"),
    "weather": ("sunny", "rainy"),
    "temperature_band": ("mild 10-20C", "hot above 28C"),
    "season": ("spring", "winter"),
    "travel_status": ("in home city", "travelling away from home city"),
    "location_type": ("office", "home"),
    "recent_intent": ("Sichuan", "no recent orders"),
}


def _batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pick = lambda values: rng.choice(np.array(values, dtype=object), n)  # noqa: E731
    batch = {
        "user_id": rng.integers(0, 5000, n),
        "user_gender": pick(["female", "male", "unknown"]),
        "user_age_band": pick(["18-24", "25-34", "55+"]),
        "user_home_city": pick(SCENE_VALUES["city"]),
        "user_member_level": pick(["regular", "silver", "gold"]),
        "device": pick(["ios", "android", "mini_program"]),
        "poi_id": rng.integers(0, 5000, n),
        "poi_city": pick(SCENE_VALUES["city"]),
        "poi_cuisine": pick(["Cantonese", "hot pot", "noodles"]),
        "poi_price_level": rng.integers(1, 5, n),
        "position": rng.integers(1, 30, n),
    }
    batch.update({f"scene_{f}": pick(SCENE_VALUES[f]) for f in SCENE_FEATURES})
    return batch


def _inputs(texts: list[str]) -> CtrInputs:
    n = len(texts)
    return CtrInputs(torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, 0), texts=texts)


@pytest.fixture()
def tokenizer():
    """A tiny byte-level BPE that knows the prompts' words and has each answer as one token."""
    answers = [f"; the user will{w}" for w in ANSWER_WORDS] * 20
    return tiny_tokenizer(tuple(build_prompts(_batch(40, seed=1), LAYOUT) + answers), vocab_size=420)


@pytest.fixture()
def model(tokenizer):
    return P5Model(tiny_llama(tokenizer, seed=3), tokenizer, max_length=128)


# --- prompts ---------------------------------------------------------------------------------


def test_prompt_text_and_nulls():
    batch = {c: values[:2] for c, values in _batch(2).items()}
    batch.update(
        user_id=np.array([123, 98765]),
        user_gender=np.array(["female", None], dtype=object),
        user_age_band=np.array(["25-34", "55+"], dtype=object),
        user_home_city=np.array(["Guangzhou", "Chengdu"], dtype=object),
        user_member_level=np.array(["gold", "regular"], dtype=object),
        device=np.array(["ios", "android"], dtype=object),
        poi_id=np.array([456, 7]),
        poi_city=np.array(["Guangzhou", "Beijing"], dtype=object),
        poi_cuisine=np.array(["Cantonese", "hot pot"], dtype=object),
        poi_price_level=np.array([2.0, np.nan]),  # a nullable int column read through pandas
        position=np.array([3, 17]),
    )
    scene = [SCENE_VALUES[f][0] for f in SCENE_FEATURES]
    batch.update(
        {f"scene_{f}": np.array([v, v], dtype=object) for f, v in zip(SCENE_FEATURES, scene, strict=True)}
    )
    prompts = build_prompts(batch, LAYOUT)
    scene_text = (
        "Guangzhou business district lunch weekday sunny mild 10-20C spring in home city office Sichuan"
    )
    assert prompts[0] == (
        "user 123 female 25-34 Guangzhou gold ios; shop 456 Guangzhou Cantonese 2; position 3; "
        f"scene {scene_text}; the user will"
    )
    assert prompts[1].startswith(
        "user 98765 unknown 55+ Chengdu regular android; shop 7 Beijing hot pot unknown;"
    )


def test_prompts_are_short_for_smollm2():
    smollm2 = pytest.importorskip("transformers").AutoTokenizer
    try:
        tokenizer = smollm2.from_pretrained(".models/smollm2-135m-instruct")
    except OSError:
        pytest.skip("SmolLM2 is not in .models/")
    lengths = [len(tokenizer.encode(p)) for p in build_prompts(_batch(50), LAYOUT)]
    assert max(lengths) <= 75, max(lengths)


def test_prompt_bad_input():
    batch = _batch(3)
    del batch["scene_weather"]
    with pytest.raises(PromptError, match="'scene_weather'"):
        build_prompts(batch, LAYOUT)
    batch = _batch(3)
    batch["position"] = np.array([1.5, 2.0, 3.0])
    with pytest.raises(PromptError, match="'position'"):
        build_prompts(batch, LAYOUT)
    batch = _batch(3)
    batch["device"] = batch["device"][:2]
    with pytest.raises(PromptError, match="differ in length"):
        build_prompts(batch, LAYOUT)
    assert build_prompts({c: np.array([]) for c in prompt_columns(LAYOUT)}, LAYOUT) == []


# --- answer tokens ---------------------------------------------------------------------------


def test_answer_tokens(tokenizer):
    ids = answer_token_ids(tokenizer)
    assert [tokenizer.encode(w, add_special_tokens=False) for w in ANSWER_WORDS] == [[i] for i in ids]
    plain = tiny_tokenizer()  # splits " click" and " order": their first tokens are used
    first = [plain.encode(w, add_special_tokens=False)[0] for w in ANSWER_WORDS]
    assert answer_token_ids(plain) == first and len(set(first)) == 3
    with pytest.raises(P5Error, match="share a first token"):
        answer_token_ids(plain, (" no", " nope", " click"))


# --- the model -------------------------------------------------------------------------------


def test_forward_shape_and_logits_are_a_three_way_softmax(model, tokenizer):
    texts = build_prompts(_batch(5, seed=2), LAYOUT)
    out = model(_inputs(texts))
    assert out.ctr_logit.shape == out.ctcvr_logit.shape == (5,) and out.align_loss is None
    assert torch.isfinite(out.ctr_logit).all() and torch.isfinite(out.ctcvr_logit).all()
    no, click, order = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ANSWER_WORDS)
    for i, text in enumerate(texts):  # each prompt alone, unpadded, straight through the LM
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            p = torch.softmax(model.lm(input_ids=ids).logits[0, -1, [no, click, order]], dim=0)
        assert torch.sigmoid(out.ctr_logit[i]).item() == pytest.approx((p[1] + p[2]).item(), abs=1e-5)
        assert torch.sigmoid(out.ctcvr_logit[i]).item() == pytest.approx(p[2].item(), abs=1e-5)


def test_left_padding_scores_a_prompt_as_alone(model):
    texts = build_prompts(_batch(3, seed=4), LAYOUT)
    short = "user 1 male; the user will"
    with torch.no_grad():
        batch = model(_inputs([short, *texts]))
        for i, text in enumerate([short, *texts]):
            alone = model(_inputs([text]))
            torch.testing.assert_close(batch.ctr_logit[i], alone.ctr_logit[0], atol=1e-4, rtol=0)
            torch.testing.assert_close(batch.ctcvr_logit[i], alone.ctcvr_logit[0], atol=1e-4, rtol=0)
    assert model.encode([short, *texts])["attention_mask"][0, 0] == 0  # the short one was padded


def test_truncation_keeps_the_end_of_the_prompt(tokenizer):
    model = P5Model(tiny_llama(tokenizer), tokenizer, max_length=8)
    long, short = build_prompts(_batch(1), LAYOUT)[0], "the user will"
    encoded = model.encode([long, short])
    long_ids, short_ids = tokenizer(long)["input_ids"], tokenizer(short)["input_ids"]
    assert len(long_ids) > 8 and len(short_ids) < 8
    assert encoded["input_ids"].shape == (2, 8)
    assert encoded["input_ids"][0].tolist() == long_ids[-8:]
    assert encoded["input_ids"][1, -len(short_ids) :].tolist() == short_ids
    assert encoded["position_ids"][0].tolist() == list(range(8))
    assert encoded["position_ids"][1, -len(short_ids) :].tolist() == list(range(len(short_ids)))


def _train(model: P5Model, texts: list[str], steps: int, lr: float = 3e-3) -> list[float]:
    click = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    ctcvr = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(_inputs(texts))
        loss = bce(out.ctr_logit, click) + bce(out.ctcvr_logit, ctcvr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_adamw_steps_reduce_the_bce_loss(model):
    losses = _train(model, build_prompts(_batch(6, seed=5), LAYOUT), steps=8)
    assert losses[-1] < 0.7 * losses[0], losses


def test_train_layers_freezes_embeddings_and_earlier_blocks(tokenizer):
    model = P5Model(tiny_llama(tokenizer, seed=1), tokenizer, max_length=128, train_layers=1)
    decoder = model.lm.get_decoder()
    frozen = {"embeddings": decoder.embed_tokens, "block 0": decoder.layers[0]}
    trained = {"block 1": decoder.layers[1], "norm": decoder.norm}
    assert not any(p.requires_grad for m in frozen.values() for p in m.parameters())
    assert all(p.requires_grad for m in trained.values() for p in m.parameters())
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in {**frozen, **trained}.items()}
    losses = _train(model, build_prompts(_batch(6, seed=6), LAYOUT), steps=3)
    assert losses[-1] < losses[0]
    for name, module in frozen.items():
        assert all(torch.equal(a, b) for a, b in zip(before[name], module.parameters(), strict=True)), name
    for name, module in trained.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters(), strict=True)), (
            name
        )


def test_build_p5_and_save_round_trip(tokenizer, tmp_path):
    lm = tiny_llama(tokenizer, seed=2)
    assert tokenizer.pad_token is None
    save_backbone(lm, tokenizer, tmp_path / "tiny")
    built = build_p5(str(tmp_path / "tiny"), max_length=64, train_layers=1, dtype=torch.float32)
    assert (
        built.tokenizer.pad_token is not None and built.lm.config.pad_token_id == built.tokenizer.pad_token_id
    )
    texts = build_prompts(_batch(3, seed=7), LAYOUT)
    direct = P5Model(lm, tokenizer, max_length=64)
    with torch.no_grad():
        expected = direct(_inputs(texts)).ctr_logit
        torch.testing.assert_close(built(_inputs(texts)).ctr_logit, expected)
        again = build_p5(str(built.save(tmp_path / "saved")), max_length=64)
        torch.testing.assert_close(again(_inputs(texts)).ctr_logit, expected)


def test_bad_input(model, tokenizer):
    with pytest.raises(P5Error, match="texts"):
        model(CtrInputs(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0)))
    with pytest.raises(P5Error, match="1 prompts for 2 samples"):
        model(CtrInputs(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0), texts=["a"]))
    with pytest.raises(P5Error, match="LM has 2 blocks"):
        P5Model(tiny_llama(tokenizer), tokenizer, train_layers=3)
    with pytest.raises(P5Error, match="train_layers must be >= 0"):
        P5Model(tiny_llama(tokenizer), tokenizer, train_layers=-1)
