"""The names stage 3 is run and reported by, defined once: the CTR models, LARR's ablations, the
sweeps of its alignment and the MLflow tags of a seed run (`larr train ctr` writes them,
`larr report` reads them). The text stages' ablations (`none`, `no_cpt`, `no_ft`) are the model
variants of core/tracking.py, which `latest:contrastive/<ablation>` resolves.
"""

from __future__ import annotations

from core.tracking import VARIANTS

# -- models (`larr train ctr --model`) ---------------------------------------------------------------
LR, WIDE_DEEP, DEEPFM, PLE, LARR, P5 = "lr", "wide_deep", "deepfm", "ple", "larr", "p5"
LARR_PLUS = "larr_plus"  # beyond the paper: LARR plus the frozen user and POI text vectors
# LR first: the plain logistic regression every deep model must beat
ID_MODELS = (LR, WIDE_DEEP, DEEPFM, PLE, LARR, LARR_PLUS)  # built by training.ctr.models.build_model
SCENE_MODELS = (LARR, LARR_PLUS)  # read the scene vectors of `larr embed scenes`
CTR_MODELS = (*ID_MODELS, P5)  # P5 is an LLM scoring a prompt (training/ctr/models/p5.py)

# -- ablations of LARR (`--ablation`): the encoder's variants, and no alignment loss ----------------
NO_AL = "no_al"
CTR_ABLATIONS = (*VARIANTS, NO_AL)

# -- sweeps of LARR's alignment (`larr sweep`, the paper's Figure 4): the values of SWEEP_TAG -------
TEMPERATURE_SWEEP, NEG_RATIO_SWEEP = "temperature", "neg_ratio"
TUNE_SWEEP = "tune"  # `larr tune`'s trials (training/ctr/tune.py)
GAP_SWEEP = "gap"  # `larr gap`'s variants (training/ctr/gap.py)

# -- MLflow tags of a seed run -----------------------------------------------------------------------
MODEL_TAG = "larr.ctr_model"
ABLATION_TAG = "larr.ablation"
SEED_TAG = "larr.seed"
SWEEP_TAG = "larr.sweep"  # non-empty: a sweep point, kept out of Tables 2 and 3
SAMPLES_TAG = "larr.samples_version"
ENCODER_TAG = "larr.encoder_uri"
TUNED_TAG = "larr.tuned"  # the `larr tune` run whose chosen configuration this seed run trains

# -- MLflow tags of a `larr tune` trial run (its seed runs nest under it) -----------------------------
TUNE_TAG = "larr.tune"  # the model tuned
TRIAL_TAG = "larr.trial"  # the trial's index

# -- MLflow tag of a `larr gap` variant run (its seed runs nest under it) ------------------------------
GAP_TAG = "larr.gap"  # the variant's label, e.g. "ple + semantic_logit"
# -- and of the `larr gap` command's run: one data size, read back to tabulate every size -------------
GAP_MODEL_TAG = "larr.gap_model"  # the baseline model the oracles were added to
GAP_VARIANTS_TAG = "larr.gap_variants"  # the variants' labels, as JSON
