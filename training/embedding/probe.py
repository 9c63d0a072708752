"""A linear probe: how well a hidden dish attribute can be read off the POI embeddings.

Evidence that stages 1 and 2 put semantics into the vectors (docs/method.md): the synthetic world
keeps each shop's dish attributes (hot or cold food, spicy, sweet) only in `truth.pois`; the
public POI text mentions them only through dish names and introductions. A logistic regression on
the 128-d embedding of the POI's comprehensive text (the text stage 2 embeds for user -> POI
retrieval) predicts the attribute; the score is the out-of-fold AUC of a k-fold cross-validation
whose folds hold out whole DISHES (drawn with the seed): the attribute is a property of the dish,
so folds over POIs would let the probe memorise dish names seen in training; held-out dishes make
it generalise "hot food" to dishes it never saw, which is what knowledge of food buys. Base and
fine-tuned encoders are compared on the same POIs, folds and regularisation.

Which text: `comprehensive` (name, location, cuisine, dishes, price, tags, introduction, ...: the
introduction sometimes says "served piping hot" outright) or `business` (name, location, cuisine,
dishes: the attribute is only implied by what the dishes are, which is where an LLM's knowledge
of food has to do the work).

Labels: `temperature` is hot (1) against cold (-1), shops with neutral food left out; `spicy` and
`sweet` are 1 against 0. Without `truth.pois` (a lakehouse of real logs) there is nothing to
probe and the trainer skips it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

TRUTH_TABLE = "truth.pois"
POI_TABLE = "clean.pois"
ATTRIBUTES = ("temperature", "spicy", "sweet")
TEXTS = ("comprehensive", "business")


@dataclass(frozen=True)
class ProbeSet:
    attribute: str
    poi_ids: tuple[int, ...]
    texts: tuple[str, ...]
    labels: tuple[int, ...]  # 1 = the attribute's positive class
    groups: tuple[int, ...] = ()  # the POI's dish: folds hold out whole groups


def probe_set(
    spark, catalog, attribute: str, max_pois: int, seed: int, text: str = "comprehensive"
) -> ProbeSet | None:
    """The probed POIs (at most `max_pois`, 0 = all, chosen by a seeded hash): their `text`
    (module docstring) and label; None when the lakehouse has no `truth.pois` or `clean.pois`."""
    from pyspark.sql import functions as F

    from core.schema_table import read_schema
    from etl.text.item_text import item_text

    if attribute not in ATTRIBUTES:
        raise ValueError(f"probe attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    if text not in TEXTS:
        raise ValueError(f"probe text must be one of {TEXTS}, got {text!r}")
    if not (catalog.exists(spark, TRUTH_TABLE) and catalog.exists(spark, POI_TABLE)):
        return None
    truth = catalog.read(spark, TRUTH_TABLE)
    if attribute == "temperature":
        label = F.when(F.col("temperature") == 1, 1).when(F.col("temperature") == -1, 0)
    else:
        label = F.col(attribute).cast("int")
    labelled = truth.select("poi_id", label.alias("label"), "dish_idx").where(F.col("label").isNotNull())
    item_texts = item_text(read_schema(spark, catalog), text)  # the dataset schema's slices
    texts = catalog.read(spark, POI_TABLE).select("poi_id", item_texts.alias("text"))
    rows = labelled.join(texts, "poi_id").where(F.length(F.trim("text")) > 0)
    rows = rows.orderBy(F.xxhash64("poi_id", F.lit(seed)), "poi_id")
    if max_pois:
        rows = rows.limit(max_pois)
    collected = rows.collect()  # bounded: one row per probed POI
    return ProbeSet(
        attribute=attribute,
        poi_ids=tuple(int(r["poi_id"]) for r in collected),
        texts=tuple(str(r["text"]) for r in collected),
        labels=tuple(int(r["label"]) for r in collected),
        groups=tuple(int(r["dish_idx"]) for r in collected),
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank AUC (ties count one half); nan when one class is missing."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def fit_logistic(x: Tensor, y: Tensor, l2: float, max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """(weight, bias) of an L2-regularised logistic regression (full-batch L-BFGS, float64)."""
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
        loss = loss + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def linear_probe(
    embeddings: Tensor,
    labels: Tensor | np.ndarray,
    groups: np.ndarray | None = None,
    folds: int = 5,
    l2: float = 1e-2,
    seed: int = 0,
) -> dict[str, float]:
    """Out-of-fold AUC and accuracy of a logistic regression on `embeddings` (n, d), standardised
    on each training fold; with `groups`, a group's rows share a fold (grouped k-fold);
    `majority_accuracy` is what always guessing the larger class gets."""
    x = torch.as_tensor(embeddings, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
    n = x.shape[0]
    if x.ndim != 2 or y.shape != (n,):
        raise ValueError(f"embeddings (n, d) and labels (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if n < 2 * folds:
        raise ValueError(f"a {folds}-fold probe needs at least {2 * folds} POIs, got {n}")
    generator = torch.Generator().manual_seed(seed)
    if groups is None:
        fold_of = torch.randperm(n, generator=generator) % folds
    else:
        names, group_index = np.unique(np.asarray(groups), return_inverse=True)
        if len(names) < folds:
            raise ValueError(f"a {folds}-fold probe needs at least {folds} groups, got {len(names)}")
        fold_of = (torch.randperm(len(names), generator=generator) % folds)[torch.as_tensor(group_index)]
    scores = torch.zeros(n, dtype=torch.float64)
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
        weight, bias = fit_logistic((x[train] - mean) / std, y[train], l2)
        scores[test] = ((x[test] - mean) / std) @ weight + bias
    truth = y.numpy().astype(bool)
    positive_rate = float(truth.mean())
    return {
        "auc": roc_auc(scores.numpy(), truth),
        "accuracy": float(((scores.numpy() > 0) == truth).mean()),
        "majority_accuracy": max(positive_rate, 1 - positive_rate),
        "pois": n,
        "groups": int(len(np.unique(groups))) if groups is not None else n,
    }
