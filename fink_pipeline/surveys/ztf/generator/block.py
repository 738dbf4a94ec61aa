"""One block of synthetic ZTF alerts: the sections in the order they draw from the block's
random stream, then the assembly into an `ARCHIVE_SCHEMA` record batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.ztf.generator.arrays import (
    _const,
    _digits,
    _fixed_strings,
    _map_of_floats,
    _utc_ymd,
    _vocab,
    _with_nulls,
)
from fink_pipeline.surveys.ztf.generator.candidate import _candidate_struct
from fink_pipeline.surveys.ztf.generator.constants import (
    _CDS_VOCAB,
    BLOCK_SIZE,
    FINK_BROKER_VERSION,
    FINK_SCIENCE_VERSION,
    JD_UNIX_EPOCH,
    P_NEW,
    P_SSO,
    P_TRACKLET,
    P_TRANSIENT,
    PUBLISHER,
    SCHEMA_VERSION,
)
from fink_pipeline.surveys.ztf.generator.crossmatch import _cross_matches
from fink_pipeline.surveys.ztf.generator.cutouts import _cutout_arrays, _empty_cutouts
from fink_pipeline.surveys.ztf.generator.detection import (
    _morphology,
    _photometry,
    _Reference,
    _reference_source,
    _solar_system,
)
from fink_pipeline.surveys.ztf.generator.history import _history, _History, _light_curve_columns, _prv_candidates_list
from fink_pipeline.surveys.ztf.generator.objects import (
    _Block,
    _candidate_ids,
    _Exposures,
    _exposures,
    _object_identity,
    _object_ids,
    _population,
    _Population,
    _positions,
    _with_galaxy_hosts,
)
from fink_pipeline.surveys.ztf.generator.scores import _fink_scores, _Scores
from fink_pipeline.surveys.ztf.generator.sky import _NightPlan, _seed_seq
from fink_pipeline.surveys.ztf.schema import ARCHIVE_SCHEMA

Columns = dict[str, pa.Array]


def _generate_block(plan: _NightPlan, b: int, with_cutouts: bool) -> pa.RecordBatch:
    """Alerts of block `b` of the night: every section draws from the block's stream in turn."""
    n = min(BLOCK_SIZE, plan.n_alerts - b * BLOCK_SIZE)
    blk = _Block(plan, b, n, np.random.Generator(np.random.PCG64(_seed_seq(plan.seed, plan.night, b, 0xB10C))))
    pop = _population(blk)
    exp = _exposures(blk, pop)
    obj = _object_identity(blk, pop, exp)
    pop = dataclasses.replace(pop, cds=_with_galaxy_hosts(pop, obj))  # after the identity keys
    pos = _positions(blk, exp, obj)
    pid, tblid, candid = _candidate_ids(blk, exp, pos.rcid)
    object_id, first_det, birth_jd = _object_ids(blk, pop, exp, obj)
    phot = _photometry(blk, pop, exp)
    ref = _reference_source(blk, pop, obj, pos, phot)
    morph = _morphology(blk, pop, exp, ref)
    sso = _solar_system(blk, pop, phot)
    hist = _history(blk, pop, exp, obj, phot, first_det, birth_jd)
    gaia, is_blazar, cross_matches = _cross_matches(blk, pop, obj, pos, ref, hist.spicy_trend)
    scores, morph = _fink_scores(blk, pop, exp, hist, morph, sso)
    light_curve = _light_curve_columns(blk, exp, phot, hist)
    fink_values = _fink_value_columns(blk, pop, hist, ref, gaia, is_blazar)
    tracklet = _tracklet_ids(blk, exp)
    candidate = _candidate_struct(blk, exp, obj, pos, (pid, tblid, candid), phot, ref, morph, sso, hist)
    prv_list = _prv_candidates_list(blk, pop, exp, pos, phot, ref, morph, hist)
    timestamps = _timestamp_columns(blk, exp.jd)
    cutouts = _cutout_arrays(plan, b, candid, pid, exp.jd, phot.isdiffpos_t) if with_cutouts else _empty_cutouts(n)
    columns = {
        "candid": pa.array(candid, pa.int64()),
        "objectId": object_id,
        "candidate": candidate,
        "prv_candidates": prv_list,
        "cutoutScience": cutouts[0],
        "cutoutTemplate": cutouts[1],
        "cutoutDifference": cutouts[2],
        "cdsxmatch": _vocab(_CDS_VOCAB, pop.cds),
        "nalerthist": pa.array(hist.nalerthist.astype(np.int32)),
        "tracklet": tracklet,
        **_constant_columns(n), **cross_matches, **_score_columns(scores), **light_curve, **fink_values, **timestamps,
    }  # fmt: skip
    return pa.RecordBatch.from_arrays([columns[f.name] for f in ARCHIVE_SCHEMA], schema=ARCHIVE_SCHEMA)


def _constant_columns(n: int) -> Columns:
    """Schema, publisher and Fink versions."""
    return {
        "schemavsn": _vocab([SCHEMA_VERSION], np.zeros(n)),
        "publisher": _vocab([PUBLISHER], np.zeros(n)),
        "fink_broker_version": _vocab([FINK_BROKER_VERSION], np.zeros(n)),
        "fink_science_version": _vocab([FINK_SCIENCE_VERSION], np.zeros(n)),
    }


def _score_columns(scores: _Scores) -> Columns:
    """Classifier score columns read by the Fink class rules."""
    return {
        "roid": pa.array(scores.roid.astype(np.int32)),
        "rf_snia_vs_nonia": pa.array(scores.rf_ia),
        "snn_snia_vs_nonia": pa.array(scores.snn_ia),
        "snn_sn_vs_all": pa.array(scores.snn_all),
        "mulens": pa.array(scores.mulens),
        "rf_kn_vs_nonkn": pa.array(scores.rf_kn),
    }


def _fink_value_columns(blk: _Block, pop: _Population, hist: _History, ref: _Reference, gaia: np.ndarray,
                        is_blazar: np.ndarray) -> Columns:
    """Anomaly scores, SLSN score, is_transient and blazar statistics."""
    n, rng, profile, nalerthist, distnr = blk.n, blk.rng, pop.profile, hist.nalerthist, ref.distnr
    # computed from the light-curve features: missing for most single-detection alerts
    has_anomaly = (nalerthist >= 2) | (rng.random(n) < 0.55)
    base = -(0.0145 + 0.0025 * rng.standard_normal(n))
    outlier = rng.random(n) < 0.03
    base = np.where(outlier, -rng.uniform(0.04, 0.42, n), np.minimum(base, -0.008))
    anomaly = {
        "anomaly_score": base,
        "anomaly_score_beta": base * rng.uniform(1.8, 2.6, n),
        "anomaly_score_anais": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_emille": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_julien": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_maria": None,
        "anomaly_score_emille_30days": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_varvara": base * rng.uniform(0.9, 1.1, n),
    }
    anomaly["anomaly_score_maria"] = anomaly["anomaly_score_beta"]  # identical in Fink's output
    slsn = np.where(np.isin(profile, (P_TRANSIENT, P_NEW)) & (nalerthist >= 2) & (rng.random(n) < 0.9), rng.beta(1, 8, n), -1.0)
    is_transient = np.isin(profile, (P_TRANSIENT, P_NEW, P_SSO, P_TRACKLET)) & ~gaia & (distnr > 1.0) & (rng.random(n) < 0.8)
    blazar_stats = _map_of_floats(
        ("m1", "m2", "m0"),
        [np.where(is_blazar, rng.uniform(0.3, 1.3, n), -1.0), np.where(is_blazar, rng.uniform(0.2, 1.0, n), -1.0),
         np.where(is_blazar, rng.uniform(0.5, 1.6, n), -1.0)],
        n,
    )  # fmt: skip
    return {
        **{k: pa.array(v, pa.float64(), mask=~has_anomaly) for k, v in anomaly.items()},
        "blazar_stats": blazar_stats,
        "is_transient": pa.array(is_transient),
        "slsn_score": pa.array(slsn),
    }


def _tracklet_ids(blk: _Block, exp: _Exposures) -> pa.Array:
    """Tracklet ids: TRCK_<exposure UTC time>_<index within the exposure> (null off tracklets)."""
    n, jd, e, rank_offset = blk.n, exp.jd, exp.e, exp.rank_offset
    is_trk, trk_idx, trk_group = exp.is_trk, exp.trk_idx, exp.trk_group
    trk_null = ~is_trk
    if len(trk_idx):
        y, mo, d = _utc_ymd(jd)
        secs = np.floor(((jd - 0.5) % 1.0) * 86400.0 + 1e-6).astype(np.int64)
        group_rank = np.zeros(n, dtype=np.int64)
        ge = e[trk_idx]
        gk = trk_group[trk_idx]
        uniq_groups, first_pos = np.unique(gk, return_index=True)
        g_exp = ge[first_pos]
        order_g = np.lexsort((uniq_groups, g_exp))
        ranks = np.empty(len(uniq_groups), dtype=np.int64)
        sorted_exp = g_exp[order_g]
        ranks[order_g] = np.arange(len(order_g)) - np.searchsorted(sorted_exp, sorted_exp)
        # blocks sharing one exposure (very large nights) number their tracklets apart
        group_rank[trk_idx] = ranks[np.searchsorted(uniq_groups, gk)] + (rank_offset // BLOCK_SIZE) * 8
        prefix = _fixed_strings([
            _const("TRCK_", n), _digits(y, 4), _digits(mo, 2), _digits(d, 2), _const("_", n),
            _digits(secs // 3600, 2), _digits((secs // 60) % 60, 2), _digits(secs % 60, 2), _const("_", n),
        ])  # fmt: skip
        number_str = pc.utf8_lpad(pc.cast(pa.array(group_rank), pa.string()), 2, "0")
        tracklet = _with_nulls(pc.binary_join_element_wise(prefix, number_str, ""), trk_null)
    else:
        tracklet = pa.nulls(n, pa.string())
    return tracklet


def _timestamp_columns(blk: _Block, jd: np.ndarray) -> Columns:
    """Observation time and Fink's ingest and processing times (minutes after the exposure)."""
    n, rng = blk.n, blk.rng
    obs_us = np.round((jd - JD_UNIX_EPOCH) * 86400e6).astype(np.int64)
    ingest_us = obs_us + (rng.lognormal(np.log(40 * 60), 0.6, n) * 1e6).astype(np.int64)
    start_us = ingest_us + rng.uniform(30e6, 180e6, n).astype(np.int64)
    end_us = start_us + rng.uniform(45e6, 150e6, n).astype(np.int64)
    ts = pa.timestamp("us", tz="UTC")
    return {
        "brokerIngestTimestamp": pa.array(ingest_us, ts),
        "brokerStartProcessTimestamp": pa.array(start_us, ts),
        "brokerEndProcessTimestamp": pa.array(end_us, ts),
        "timestamp": pa.array(obs_us, ts),
    }
