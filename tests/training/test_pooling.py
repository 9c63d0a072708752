import pytest
import torch

from etl.text.slices import token_slices
from etl.tokens import closing_token
from tests.etl.text_fixtures import SCHEMA
from training.embedding.pooling import (
    closing_token_positions,
    hidden_at,
    last_token_hidden,
    last_token_positions,
    position_ids_from_mask,
)
from training.lm.backbone import add_special_tokens
from training.lm.tiny import tiny_llama, tiny_tokenizer

SLICES = token_slices(SCHEMA)  # the synthetic world's declared slices

# hidden[i, t] = [10 * i + t]: a pooled value names the row and position it came from
HIDDEN = (10 * torch.arange(3).view(3, 1, 1) + torch.arange(5).view(1, 5, 1)).float()


def test_last_token_under_right_left_and_mixed_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    mixed = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    assert last_token_positions(right).tolist() == [2, 4, 0]
    assert last_token_positions(left).tolist() == [4, 4, 4]
    assert last_token_positions(mixed).tolist() == [1, 4, 2]
    assert last_token_hidden(HIDDEN, right).flatten().tolist() == [2.0, 14.0, 20.0]
    assert last_token_hidden(HIDDEN, left).flatten().tolist() == [4.0, 14.0, 24.0]
    assert last_token_hidden(HIDDEN, mixed.bool()).flatten().tolist() == [1.0, 14.0, 22.0]


def test_a_row_of_padding_only_is_an_error():
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        last_token_positions(torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(ValueError, match="positions"):
        hidden_at(HIDDEN, torch.tensor([0, 1]))


def test_closing_token_positions_take_the_last_occurrence():
    ids = torch.tensor([[5, 7, 1, 7, 0], [7, 2, 3, 4, 0], [0, 0, 9, 9, 7]])
    assert closing_token_positions(ids, 7).tolist() == [3, 0, 4]
    # a masked position does not count
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    assert closing_token_positions(ids, 7, attention_mask=mask).tolist() == [1, 0, 4]


def test_a_row_without_the_closing_token_is_an_error_naming_it():
    ids = torch.tensor([[5, 7, 1], [2, 3, 4], [7, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] lack the closing token '</scene_weather>' \(id 7\)"):
        closing_token_positions(ids, 7, token="</scene_weather>")
    with pytest.raises(ValueError, match=r"rows \[0, 1, 2\] lack the closing token id 8"):
        closing_token_positions(ids, 8)


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


TEXTS = [
    "<POI_name>Aunt Li's Claypot rice</POI_name>",
    "<POI_name>Hot pot</POI_name>",
    "<POI_name>A cold noodle shop near the station, Guangzhou</POI_name>",
]


@torch.no_grad()
def _pooled(model, tokenizer, texts, padding_side):
    tokenizer.padding_side = padding_side
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=position_ids_from_mask(batch["attention_mask"]),
        output_hidden_states=True,
    )
    return batch, out.hidden_states[-1]


def test_left_and_right_padding_pool_the_same_vectors_on_a_tiny_llama():
    close = closing_token("POI_name")
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer)
    add_special_tokens(model, tokenizer, SLICES)  # the registry's tokens; eos pads

    right_batch, right_hidden = _pooled(model, tokenizer, TEXTS, "right")
    left_batch, left_hidden = _pooled(model, tokenizer, TEXTS, "left")
    assert (right_batch["attention_mask"][:, -1] == 0).any() and (
        left_batch["attention_mask"][:, 0] == 0
    ).any()

    right = last_token_hidden(right_hidden, right_batch["attention_mask"])
    left = last_token_hidden(left_hidden, left_batch["attention_mask"])
    torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-5)
    # and both equal each text embedded alone, without padding
    alone = torch.cat([_pooled(model, tokenizer, [t], "right")[1][:, -1] for t in TEXTS])
    torch.testing.assert_close(right, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(right[0], right[1])

    # the texts end with the closing token, so pooling at it gives the same vectors
    close_id = tokenizer.convert_tokens_to_ids(close)
    for batch, hidden, pooled in ((right_batch, right_hidden, right), (left_batch, left_hidden, left)):
        positions = closing_token_positions(batch["input_ids"], close_id, close, batch["attention_mask"])
        torch.testing.assert_close(hidden_at(hidden, positions), pooled)
