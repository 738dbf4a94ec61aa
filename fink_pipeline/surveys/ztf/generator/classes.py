"""Planted classes of the synthetic ZTF alerts and the generator's own copy of the Fink rules.

Every alert is planted with a target `finkclass` (reference section 3.1) drawn with realistic
fractions and floors; `_fink_flags` and `_finkclass_index` re-implement the rules so that the
block generator can check that each planted class is reproduced.
"""

from __future__ import annotations

import numpy as np

from fink_pipeline.surveys.ztf.generator.constants import (
    _CDS_IS_EG,
    _CDS_VOCAB,
    _LABEL_FLOOR,
    _LABEL_INDEX,
    _LABEL_W,
    AMBIGUOUS,
    EARLY_SN,
    K_UNKNOWN,
    KN,
    LABELS,
    MULENS,
    SN,
    SSO_CAND,
    SSO_MPC,
    TRACKLET,
)


def _assign_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Label index per alert: expected counts (randomised rounding), floors of 1, shuffled.

    Unknown, the largest class, absorbs the rounding and the floors.
    """
    expected = _LABEL_W * n
    counts = np.floor(expected).astype(np.int64)
    counts += rng.random(len(counts)) < expected - counts
    if n >= 4 * int(_LABEL_FLOOR.sum()):
        counts = np.where(_LABEL_FLOOR, np.maximum(counts, 1), counts)
    counts[K_UNKNOWN] = 0
    counts[K_UNKNOWN] = n - counts.sum()
    if counts[K_UNKNOWN] < 0:  # very small blocks: plain draws
        counts = rng.multinomial(n, _LABEL_W)
    labels = np.repeat(np.arange(len(LABELS)), counts)
    return rng.permutation(labels)


def _fink_flags(cds, roid, mulens, snn_ia, snn_all, rf_ia, ndethist, drb, classtar, jd, jdstarthist, rf_kn, is_trk):
    """Which Fink rules (reference section 3.1) each alert satisfies."""
    eg = _CDS_IS_EG[cds]
    snn = (snn_ia > 0.5) | (snn_all > 0.5)
    good = (drb > 0.5) & (classtar > 0.4) & eg
    age = jd - jdstarthist
    return {
        "early": snn & good & (ndethist <= 20) & (rf_ia > 0.5),
        "sn": snn & good & (age <= 90) & (ndethist > 1) & (roid != 3),
        "kn": (rf_kn > 0.5) & good & (age < 5) & (roid != 3) & (ndethist < 20),
        "mulens": mulens > 0.0,
        "roid3": roid == 3,
        "roid2": roid == 2,
        "tracklet": is_trk,
    }


def _finkclass_index(flags: dict[str, np.ndarray], cds: np.ndarray) -> np.ndarray:
    """Label index of extract_fink_classification_ (SIMBAD labels via the cdsxmatch index)."""
    out = np.full(len(cds), K_UNKNOWN)
    for key, name in (("mulens", MULENS), ("sn", SN), ("early", EARLY_SN), ("kn", KN), ("roid2", SSO_CAND),
                      ("tracklet", TRACKLET), ("roid3", SSO_MPC)):  # fmt: skip
        out = np.where(flags[key], _LABEL_INDEX[name], out)
    ambiguous = flags["mulens"].astype(int) + flags["sn"] + flags["roid2"] + flags["roid3"] > 1
    out = np.where(ambiguous, _LABEL_INDEX[AMBIGUOUS], out)
    simbad = cds >= 2  # every vocabulary entry after Unknown and Galaxy is a SIMBAD otype
    label_of_cds = np.array([_LABEL_INDEX.get(name, -1) for name in _CDS_VOCAB])
    return np.where(simbad, label_of_cds[cds], out)
