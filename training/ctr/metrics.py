"""Evaluation of the CTR / CTCVR models: AUC, the paper's GAUC, logloss, and the way back from
the negatively sampled space the models are trained in to true probabilities.

Samples keep every clicked impression and each unclicked one with probability r (`neg_rate`),
so a model's sigmoid outputs are probabilities of the sampled world. Ranking metrics are computed
on them as they are (re-calibration with one r is monotonic); probabilities reported as CTR / CTCVR
are mapped back first (`recalibrate_ctr`, `recalibrate_ctcvr`) and checked against importance
weighted observed rates (`calibration`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


class MetricError(ValueError):
    pass


def _array(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise MetricError(f"{name}: {int((~np.isfinite(array)).sum())} non-finite values")
    return array


def _labels(values, name: str) -> np.ndarray:
    array = _array(values, name)
    if not np.isin(array, (0.0, 1.0)).all():
        raise MetricError(f"{name}: labels must be 0 or 1")
    return array


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise MetricError(f"length mismatch: {lengths}")


def _probabilities(values, name: str) -> np.ndarray:
    array = _array(values, name)
    if ((array < 0) | (array > 1)).any():
        raise MetricError(f"{name}: probabilities must lie in [0, 1]")
    return array


def _neg_rate(r) -> np.ndarray:
    rate = np.asarray(r, dtype=np.float64)
    if not (np.isfinite(rate) & (rate > 0) & (rate <= 1)).all():
        bad = rate[~(np.isfinite(rate) & (rate > 0) & (rate <= 1))].reshape(-1)[0]
        raise MetricError(f"neg_rate must lie in (0, 1], got {bad}")
    return rate


# -- ranking ----------------------------------------------------------------------------------------
def auc(labels, scores) -> float:
    """Exact ROC AUC by Mann-Whitney: P(score of a positive > score of a negative), ties 1/2
    (average ranks). nan when the labels hold one class only."""
    y, s = _labels(labels, "labels"), _array(scores, "scores")
    _same_length(labels=y, scores=s)
    positives = y.sum()
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def gauc(groups, labels, scores) -> tuple[float, int]:
    """The paper's GAUC: each user's AUC weighted by the user's number of samples, over users
    with both positive and negative samples. Returns (value, users used); (nan, 0) if none."""
    y, s = _labels(labels, "labels"), _array(scores, "scores")
    g = np.asarray(groups).reshape(-1)
    _same_length(groups=g, labels=y, scores=s)
    frame = pd.DataFrame({"g": g, "y": y, "s": s})
    frame["rank"] = frame.groupby("g", sort=False)["s"].rank(method="average")
    frame["positive_rank"] = frame["rank"] * frame["y"]
    per_user = frame.groupby("g", sort=False).agg(
        n=("y", "size"), positives=("y", "sum"), positive_ranks=("positive_rank", "sum")
    )
    negatives = per_user["n"] - per_user["positives"]
    used = per_user[(per_user["positives"] > 0) & (negatives > 0)]
    if used.empty:
        return float("nan"), 0
    pos, neg = used["positives"], used["n"] - used["positives"]
    user_auc = (used["positive_ranks"] - pos * (pos + 1) / 2) / (pos * neg)
    return float((user_auc * used["n"]).sum() / used["n"].sum()), int(len(used))


def logloss(labels, p, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]."""
    y, q = _labels(labels, "labels"), np.clip(_probabilities(p, "p"), eps, 1 - eps)
    _same_length(labels=y, p=q)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


# -- back from the sampled space ---------------------------------------------------------------------
def recalibrate_ctr(p, r) -> np.ndarray:
    """P(click) from a sampled-space CTR p when unclicked impressions were kept at rate r:
    p' = p / (p + (1 - p) / r) (docs/method.md). r = 1 is the identity."""
    rate = _neg_rate(r)
    q = _probabilities(p, "p")
    return q / (q + (1 - q) / rate)


def recalibrate_ctcvr(q, p, r) -> np.ndarray:
    """P(click and order) from the sampled-space CTCVR q and CTR p of the same rows.

    Sampling keeps a clicked impression always and an unclicked one with probability r, so the
    kept fraction is Z = P(c) + r (1 - P(c)) and, in the sampled space, p_s = P(c) / Z and
    q_s = P(c & o) / Z (every c & o row is clicked, hence kept). From 1 - p_s = r (1 - P(c)) / Z
    and P(c) = p_s Z: 1 = Z (p_s + (1 - p_s) / r), i.e. Z = r / (1 - p_s (1 - r)), and so
    P(c & o) = q_s Z = q_s r / (1 - p_s (1 - r)). (P(c) = p_s Z is `recalibrate_ctr`.) It holds
    per feature vector, so it maps a model's conditional outputs as well as rates.
    """
    rate = _neg_rate(r)
    qs, ps = _probabilities(q, "q"), _probabilities(p, "p")
    _same_length(q=qs, p=ps)
    return qs * rate / (1 - ps * (1 - rate))


class Calibration(NamedTuple):
    ratio: float  # predicted / observed; 1.0 = calibrated
    predicted: float  # importance-weighted mean predicted probability
    observed: float  # importance-weighted observed rate


def calibration(pred_true_space, labels, clicks, r) -> Calibration:
    """Predicted against observed rate in the true (unsampled) population: each unclicked row
    stands for 1/r impressions (it survived down-sampling at rate r), each clicked row for one."""
    pred = _probabilities(pred_true_space, "pred_true_space")
    y, c = _labels(labels, "labels"), _labels(clicks, "clicks")
    _same_length(pred_true_space=pred, labels=y, clicks=c)
    weight = np.where(c == 1, 1.0, 1.0 / np.broadcast_to(_neg_rate(r), c.shape))
    observed = float((weight * y).sum() / weight.sum())
    predicted = float((weight * pred).sum() / weight.sum())
    return Calibration(predicted / observed if observed > 0 else float("nan"), predicted, observed)


def evaluate(
    users,
    click,
    ctcvr,
    p_ctr,
    p_ctcvr,
    neg_rate,
    bayes_ctr=None,
    bayes_ctcvr=None,
) -> dict[str, float]:
    """Every figure the paper's tables use, for one model on the evaluation rows.

    p_ctr / p_ctcvr are the model's sampled-space probabilities; neg_rate is r (scalar or per
    row). bayes_ctr / bayes_ctcvr, the true P(click) / P(click and order) of the synthetic world
    for the same rows, give the Bayes-optimal AUC the model is measured against.
    """
    click_y, ctcvr_y = _labels(click, "click"), _labels(ctcvr, "ctcvr")
    p, q = _probabilities(p_ctr, "p_ctr"), _probabilities(p_ctcvr, "p_ctcvr")
    _same_length(click=click_y, ctcvr=ctcvr_y, p_ctr=p, p_ctcvr=q)
    if (ctcvr_y > click_y).any():
        raise MetricError("ctcvr: a row with ctcvr = 1 has click = 0")
    rate = _neg_rate(neg_rate)
    if rate.ndim and rate.size != len(click_y):
        raise MetricError(f"neg_rate: {rate.size} rates for {len(click_y)} rows (give one, or one per row)")
    ctr_gauc, ctr_users = gauc(users, click_y, p)
    ctcvr_gauc, ctcvr_users = gauc(users, ctcvr_y, q)
    ctr_cal = calibration(recalibrate_ctr(p, rate), click_y, click_y, rate)
    ctcvr_cal = calibration(recalibrate_ctcvr(q, p, rate), ctcvr_y, click_y, rate)
    figures = {
        "ctr_auc": auc(click_y, p),
        "ctcvr_auc": auc(ctcvr_y, q),
        "ctr_gauc": ctr_gauc,
        "ctcvr_gauc": ctcvr_gauc,
        "logloss": logloss(click_y, p),
        "ctcvr_logloss": logloss(ctcvr_y, q),
        "calibration_ctr": ctr_cal.ratio,
        "calibration_ctcvr": ctcvr_cal.ratio,
        "ctr_predicted_rate": ctr_cal.predicted,
        "ctr_observed_rate": ctr_cal.observed,
        "ctcvr_predicted_rate": ctcvr_cal.predicted,
        "ctcvr_observed_rate": ctcvr_cal.observed,
        "eval_rows": int(len(click_y)),
        "gauc_users": ctr_users,
        "ctcvr_gauc_users": ctcvr_users,
    }
    for task, labels, truth in (("ctr", click_y, bayes_ctr), ("ctcvr", ctcvr_y, bayes_ctcvr)):
        if truth is not None:
            best = _probabilities(truth, f"bayes_{task}")
            _same_length(**{task: labels, f"bayes_{task}": best})
            figures[f"bayes_auc_{task}"] = auc(labels, best)
            figures[f"{task}_auc_ratio_to_bayes"] = figures[f"{task}_auc"] / figures[f"bayes_auc_{task}"]
    return figures
