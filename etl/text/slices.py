"""The slices of a dataset, from its schema: which slices the stage-1 corpus, the stage-2 pairs
and the embeddings use, and the one order their special tokens are added to the tokenizer in."""

from __future__ import annotations

from core.dataset_schema import DatasetSchema, TextSlice
from etl.tokens import scene_slice

BUSINESS, BASIC, PROFILE, NONE = "business", "basic", "profile", "none"
INPUT, TARGET = "input", "target"


def contrastive_part(text_slice: TextSlice, side: str) -> str:
    """The slice's stage-2 part: business / basic / none for items, profile / none for users."""
    return text_slice.contrastive or (BUSINESS if side == "items" else PROFILE)


def item_slices(
    schema: DatasetSchema, *, role: str = "", parts: tuple[str, ...] = ()
) -> tuple[TextSlice, ...]:
    """The items' text slices in declared order, of one stage-1 role and / or stage-2 parts."""
    return tuple(
        s
        for s in schema.items.text
        if (not role or s.role == role) and (not parts or contrastive_part(s, "items") in parts)
    )


def profile_slices(schema: DatasetSchema) -> tuple[TextSlice, ...]:
    """The users' own text slices that go into stage-2 texts."""
    return tuple(s for s in schema.users.text if contrastive_part(s, "users") == PROFILE)


def token_slices(schema: DatasetSchema) -> tuple[str, ...]:
    """Every slice name of the dataset, in the order the tokenizer gets their tokens: items' text,
    users' text, user actions, then the scene features."""
    return (
        *(s.name for s in schema.items.text),
        *(s.name for s in schema.users.text),
        *(s.name for s in schema.user_actions.slices()),
        *(scene_slice(name) for name in schema.scene_names),
    )
