import math

import numpy as np
import pytest

from training.ctr.metrics import (
    MetricError,
    auc,
    calibration,
    evaluate,
    gauc,
    logloss,
    recalibrate_ctcvr,
    recalibrate_ctr,
)


def naive_auc(labels, scores):
    """The definition: over every (positive, negative) pair, 1 if the positive scores higher, 1/2 on a tie."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_matches_the_pair_count_with_many_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 6, 300) / 5  # six distinct values: ties everywhere
    assert auc(labels, scores) == pytest.approx(naive_auc(labels, scores), abs=1e-12)
    assert auc([1, 0, 1, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)


def test_auc_of_one_class_is_nan():
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_gauc_by_hand():
    # user a: labels 1 0 1 0, scores .8 .4 .4 .1
    #   pairs (pos, neg): (.8,.4)=1 (.8,.1)=1 (.4,.4)=1/2 (.4,.1)=1 -> AUC 3.5/4 = 0.875, n = 4
    # user b: labels 1 0 0, scores .2 .5 .1
    #   pairs: (.2,.5)=0 (.2,.1)=1 -> AUC 1/2, n = 3
    # user c: negatives only, user d: a positive only -> excluded
    # GAUC = (4 * 0.875 + 3 * 0.5) / (4 + 3) = 5 / 7
    rows = [  # (user, label, score), users interleaved
        ("a", 1, 0.8),
        ("b", 1, 0.2),
        ("c", 0, 0.9),
        ("a", 0, 0.4),
        ("d", 1, 0.3),
        ("b", 0, 0.5),
        ("a", 1, 0.4),
        ("c", 0, 0.7),
        ("b", 0, 0.1),
        ("a", 0, 0.1),
    ]
    users, labels, scores = zip(*rows, strict=True)
    value, used = gauc(users, labels, scores)
    assert used == 2
    assert value == pytest.approx(5 / 7, abs=1e-12)
    assert auc(labels, scores) != pytest.approx(5 / 7)  # GAUC is not the pooled AUC here


def test_gauc_with_no_usable_user():
    assert gauc([1, 1, 2], [1, 1, 0], [0.1, 0.2, 0.3]) == (pytest.approx(float("nan"), nan_ok=True), 0)


def test_logloss_by_hand():
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert math.isfinite(logloss([1, 0], [0.0, 1.0]))  # clipped


def _population(seed=1, n=400_000, r=0.1):
    """Two segments with known P(c), P(o|c); unclicked impressions kept at rate r."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, 2, n)
    p_click = np.array([0.05, 0.2])[segment]
    p_order = np.array([0.3, 0.1])[segment]
    click = rng.random(n) < p_click
    order = click & (rng.random(n) < p_order)
    kept = click | (rng.random(n) < r)
    return segment[kept], click[kept].astype(int), order[kept].astype(int)


def test_recalibration_recovers_the_true_rates_of_a_down_sampled_population():
    r = 0.1
    segment, click, ctcvr = _population(r=r)
    for s, true_ctr, true_cvr in ((0, 0.05, 0.3), (1, 0.2, 0.1)):
        p_s, q_s = click[segment == s].mean(), ctcvr[segment == s].mean()
        assert abs(p_s - true_ctr) > 0.1 * true_ctr  # the sampled space is far from the truth
        assert recalibrate_ctr(p_s, r) == pytest.approx(true_ctr, rel=0.04)
        assert recalibrate_ctcvr(q_s, p_s, r) == pytest.approx(true_ctr * true_cvr, rel=0.06)


def test_rate_one_is_the_identity():
    p, q = np.array([0.0, 0.1, 0.5, 0.9]), np.array([0.0, 0.05, 0.2, 0.3])
    np.testing.assert_allclose(recalibrate_ctr(p, 1.0), p)
    np.testing.assert_allclose(recalibrate_ctcvr(q, p, 1.0), q)


def test_recalibration_per_row_rates():
    p = np.array([0.5, 0.5])
    np.testing.assert_allclose(recalibrate_ctr(p, np.array([1.0, 0.25])), [0.5, 0.5 / (0.5 + 0.5 / 0.25)])


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), np.array([0.5, 0.0])])
def test_a_bad_rate_names_neg_rate(bad):
    with pytest.raises(MetricError, match="neg_rate must lie in"):
        recalibrate_ctr(np.array([0.2, 0.3]), bad)
    with pytest.raises(MetricError, match="neg_rate"):
        recalibrate_ctcvr(np.array([0.1, 0.1]), np.array([0.2, 0.3]), bad)


def _calibrated_world(seed=2, n=200_000, r=0.2):
    """True per-row probabilities, labels drawn from them, unclicked rows kept at rate r."""
    rng = np.random.default_rng(seed)
    p_click = rng.beta(1, 12, n)
    p_ctcvr = p_click * rng.beta(2, 8, n)
    click = rng.random(n) < p_click
    ctcvr = click & (rng.random(n) < p_ctcvr / p_click)
    kept = click | (rng.random(n) < r)
    users = rng.integers(0, 2000, n)
    return users[kept], click[kept].astype(int), ctcvr[kept].astype(int), p_click[kept], p_ctcvr[kept]


def test_calibration_of_true_probabilities_is_one_and_of_halved_ones_a_half():
    r = 0.2
    _, click, ctcvr, p_click, p_ctcvr = _calibrated_world(r=r)
    ctr = calibration(p_click, click, click, r)
    assert ctr.ratio == pytest.approx(1.0, abs=0.03)
    assert ctr.observed == pytest.approx(ctr.predicted, rel=0.03)
    assert calibration(p_ctcvr, ctcvr, click, r).ratio == pytest.approx(1.0, abs=0.05)
    assert calibration(p_click / 2, click, click, r).ratio == pytest.approx(0.5, rel=0.03)
    assert calibration(p_click, click, click, 1.0).ratio < 0.5  # unweighted: the clicks look frequent


def test_evaluate_the_exact_sampled_space_model():
    r = 0.2
    users, click, ctcvr, p_click, p_ctcvr = _calibrated_world(r=r)
    kept_fraction = p_click + r * (1 - p_click)  # per row: what a perfect sampled-space model outputs
    figures = evaluate(
        users, click, ctcvr, p_click / kept_fraction, p_ctcvr / kept_fraction, r, p_click, p_ctcvr
    )
    assert figures["ctr_auc_ratio_to_bayes"] == pytest.approx(1.0, abs=1e-12)  # a monotone map of the truth
    assert figures["ctr_auc"] == pytest.approx(
        naive_auc(click[:400], (p_click / kept_fraction)[:400]), abs=0.1
    )
    assert figures["calibration_ctr"] == pytest.approx(1.0, abs=0.03)
    assert figures["calibration_ctcvr"] == pytest.approx(1.0, abs=0.05)
    assert figures["eval_rows"] == len(click)
    assert 0 < figures["gauc_users"] <= 2000 and figures["ctcvr_gauc_users"] < figures["gauc_users"]
    assert figures["ctr_gauc"] == pytest.approx(gauc(users, click, p_click / kept_fraction)[0])
    assert figures["logloss"] == pytest.approx(logloss(click, p_click / kept_fraction))
    assert "bayes_auc_ctcvr" in figures and 0.5 < figures["ctcvr_auc_ratio_to_bayes"] <= 1.01


def test_evaluate_without_truth_and_bad_inputs():
    figures = evaluate(
        [1, 1, 2, 2], [1, 0, 1, 0], [1, 0, 0, 0], [0.9, 0.1, 0.6, 0.4], [0.5, 0.1, 0.2, 0.1], 0.5
    )
    assert figures["ctr_auc"] == 1.0 and figures["ctr_gauc"] == 1.0 and figures["gauc_users"] == 2
    assert "bayes_auc_ctr" not in figures
    with pytest.raises(MetricError, match="ctcvr = 1 has click = 0"):
        evaluate([1, 1], [0, 1], [1, 0], [0.5, 0.5], [0.5, 0.5], 0.5)
    with pytest.raises(MetricError, match="length mismatch"):
        evaluate([1, 1], [0, 1], [0, 0], [0.5], [0.5, 0.5], 0.5)
    with pytest.raises(MetricError, match="neg_rate: 3 rates for 2 rows"):
        evaluate([1, 1], [0, 1], [0, 0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5, 0.5])
    with pytest.raises(MetricError, match="labels must be 0 or 1"):
        auc([0, 2], [0.1, 0.2])
