"""Fink classifier scores of the synthetic ZTF alerts, adjusted so that each alert satisfies
exactly the rule of its planted class (reference section 3.1), then checked against the rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fink_pipeline.surveys.ztf.generator.classes import _fink_flags, _finkclass_index
from fink_pipeline.surveys.ztf.generator.constants import (
    _CDS_IS_EG,
    _LABEL_INDEX,
    _LABEL_NAMES,
    EARLY_SN,
    KN,
    MULENS,
    P_BOGUS,
    P_NEW,
    P_TRACKLET,
    SN,
    SSO_CAND,
)
from fink_pipeline.surveys.ztf.generator.detection import _Morphology, _SolarSystem
from fink_pipeline.surveys.ztf.generator.history import _History
from fink_pipeline.surveys.ztf.generator.objects import _Block, _Exposures, _Population


@dataclass(frozen=True)
class _Scores:
    """Fink classifier outputs that the class rules read."""

    roid: np.ndarray
    snn_ia: np.ndarray
    snn_all: np.ndarray
    rf_ia: np.ndarray
    rf_kn: np.ndarray
    mulens: np.ndarray


def _fink_scores(blk: _Block, pop: _Population, exp: _Exposures, hist: _History, morph: _Morphology,
                 sso: _SolarSystem) -> tuple[_Scores, _Morphology]:
    """Scores that reproduce every planted class, and the morphology the quality cuts need.

    Raises RuntimeError if a planted class is not reproduced (a generator bug).
    """
    scores = _raw_scores(blk, pop, exp, hist, sso)
    scores, morph = _plant_class_rules(blk, pop, exp, hist, morph, scores)
    _check_planted_classes(pop, exp, hist, morph, scores)
    return scores, morph


def _raw_scores(blk: _Block, pop: _Population, exp: _Exposures, hist: _History, sso: _SolarSystem) -> _Scores:
    """Asteroid flag (roid) and classifier scores as drawn for each population."""
    n, rng, label, profile, amb_sso, cds = blk.n, blk.rng, pop.label, pop.profile, pop.amb_sso, pop.cds
    ndethist, jd, jdstarthist, sso_mpc = hist.ndethist, exp.jd, hist.jdstarthist, sso.sso_mpc
    roid = np.zeros(n, dtype=np.int64)
    roid[np.isin(profile, (P_NEW, P_BOGUS)) & (ndethist == 1) & (rng.random(n) < 0.12)] = 1
    roid[(profile == P_TRACKLET) & (rng.random(n) < 0.4)] = 1
    roid[sso_mpc] = 3
    roid[(label == _LABEL_INDEX[SSO_CAND]) | amb_sso] = 2
    eg = _CDS_IS_EG[cds]
    scored = eg & (roid != 3)
    snn_ia = np.where(scored, rng.beta(1.6, 1.4, n), 0.0)
    snn_all = np.where(scored, rng.beta(0.9, 1.5, n), 0.0)
    rf_ia = np.where(scored & (ndethist <= 20) & (rng.random(n) < 0.8), rng.beta(0.9, 1.6, n), 0.0)
    age_now = jd - jdstarthist
    rf_kn = np.where(scored & (age_now < 20), rng.beta(1.1, 1.9, n), 0.0)
    mulens = np.zeros(n)
    return _Scores(roid, snn_ia, snn_all, rf_ia, rf_kn, mulens)


def _plant_class_rules(blk: _Block, pop: _Population, exp: _Exposures, hist: _History, morph: _Morphology,
                       scores: _Scores) -> tuple[_Scores, _Morphology]:
    """Raise the scores an alert's class needs, then switch off every rule it must not satisfy."""
    n, rng, label, is_ambiguous, amb_sso, cds = blk.n, blk.rng, pop.label, pop.is_ambiguous, pop.amb_sso, pop.cds
    ndethist, jd, jdstarthist, is_trk = hist.ndethist, exp.jd, hist.jdstarthist, exp.is_trk
    drb, classtar = morph.drb, morph.classtar
    roid, snn_ia, snn_all, rf_ia, rf_kn, mulens = (
        scores.roid, scores.snn_ia, scores.snn_all, scores.rf_ia, scores.rf_kn, scores.mulens
    )  # fmt: skip
    k_sn, k_early, k_kn = _LABEL_INDEX[SN], _LABEL_INDEX[EARLY_SN], _LABEL_INDEX[KN]
    k_mulens = _LABEL_INDEX[MULENS]
    wants_sn = (label == k_sn) | (is_ambiguous & ~amb_sso) | (label == k_early)
    quality = wants_sn | (label == k_kn)
    drb = np.where(quality & (drb <= 0.5), rng.uniform(0.8, 1.0, n), drb)
    classtar = np.where(quality & (classtar <= 0.4), rng.uniform(0.5, 1.0, n), classtar)
    high = rng.uniform(0.5, 1.0, n)
    first_high = rng.random(n) < 0.6
    snn_ia = np.where(wants_sn & first_high, np.maximum(snn_ia, high), snn_ia)
    snn_all = np.where(wants_sn & ~first_high, np.maximum(snn_all, high), snn_all)
    snn_ia = np.where(wants_sn, np.where(snn_ia == 0, rng.uniform(0, 1, n), snn_ia), snn_ia)
    rf_ia = np.where(label == k_early, rng.uniform(0.51, 0.98, n), rf_ia)
    rf_kn = np.where(label == k_kn, rng.uniform(0.51, 0.95, n), rf_kn)
    mulens = np.where((label == k_mulens) | is_ambiguous, rng.uniform(0.3, 1.0, n), mulens)
    flags = _fink_flags(cds, roid, mulens, snn_ia, snn_all, rf_ia, ndethist, drb, classtar, jd, jdstarthist, rf_kn, is_trk)
    # switch off every rule an alert must not satisfy
    no_sn = ~wants_sn & (flags["sn"] | flags["early"])
    no_early = (label == k_sn) & flags["early"]
    no_kn = (label != k_kn) & flags["kn"]
    cap = rng.uniform(0.0, 0.5, (3, n))
    snn_ia = np.where(no_sn, np.minimum(snn_ia, cap[0]), snn_ia)
    snn_all = np.where(no_sn, np.minimum(snn_all, cap[1]), snn_all)
    rf_ia = np.where(no_early | (no_sn & (rf_ia > 0.5)), np.minimum(rf_ia, cap[2]), rf_ia)
    rf_kn = np.where(no_kn, np.minimum(rf_kn, cap[2]), rf_kn)
    scores = _Scores(roid, snn_ia, snn_all, rf_ia, rf_kn, mulens)
    return scores, _Morphology(drb, morph.rb, classtar, morph.fwhm, morph.elong)


def _check_planted_classes(pop: _Population, exp: _Exposures, hist: _History, morph: _Morphology,
                           scores: _Scores) -> None:
    """Raise RuntimeError unless the Fink rules give back every planted class."""
    label, cds = pop.label, pop.cds
    s = scores
    flags = _fink_flags(cds, s.roid, s.mulens, s.snn_ia, s.snn_all, s.rf_ia, hist.ndethist, morph.drb,
                        morph.classtar, exp.jd, hist.jdstarthist, s.rf_kn, exp.is_trk)  # fmt: skip
    got = _finkclass_index(flags, cds)
    if not np.array_equal(got, label):  # a generator bug, never a data condition
        bad = np.flatnonzero(got != label)[:5]
        raise RuntimeError(
            "synthetic alert classes not reproduced: "
            + ", ".join(f"{_LABEL_NAMES[label[i]]} -> {_LABEL_NAMES[got[i]] if got[i] >= 0 else '?'}" for i in bad)
        )
