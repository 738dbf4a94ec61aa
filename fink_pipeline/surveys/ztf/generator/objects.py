"""Who an alert is: populations, exposures, object identities, positions and ids of a block.

Every function takes the block (`_Block`: plan, index, size and random stream) and the
sections computed before it, and draws from the block's stream in the order the sections are
called by `block._generate_block`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.ztf.generator.arrays import _encode_object_ids, _hash, _hi, _hu, _U, _utc_ymd
from fink_pipeline.surveys.ztf.generator.classes import _assign_labels
from fink_pipeline.surveys.ztf.generator.constants import (
    _CDS_INDEX,
    _CDS_OF_LABEL,
    _CDS_VOCAB,
    _LABEL_INDEX,
    _LABEL_PROFILE,
    _LABEL_SIMBAD,
    _POOL_ARTEFACT,
    _POOL_K,
    AMBIGUOUS,
    BLOCK_SIZE,
    EARLY_SN,
    JD_POOL_FIRSTDET_END,
    JD_SURVEY_START,
    K_UNKNOWN,
    KN,
    P_BOGUS,
    P_EXTRAGAL,
    P_MULENS,
    P_NEW,
    P_SSO,
    P_TRANSIENT,
    P_VARSTAR,
    S_NEW,
    S_POOL,
    S_TRANSIENT,
    SN,
    TRACKLET,
)
from fink_pipeline.surveys.ztf.generator.sky import _field_position, _grid, _NightPlan


@dataclass(frozen=True)
class _Block:
    """One block of alerts being generated: night plan, block index, size and random stream."""

    plan: _NightPlan
    b: int
    n: int
    rng: np.random.Generator


@dataclass(frozen=True)
class _Population:
    """Planted class (label index) and physical population of each alert."""

    label: np.ndarray
    profile: np.ndarray  # P_* population
    is_ambiguous: np.ndarray
    amb_sso: np.ndarray  # Ambiguous alerts that are also solar-system candidates
    source: np.ndarray  # S_* origin of the object identity
    cds: np.ndarray  # index into the cdsxmatch vocabulary


@dataclass(frozen=True)
class _Exposures:
    """Exposure of each alert and what follows from it (field, time, filter, tracklets)."""

    e: np.ndarray  # exposure index in the night plan
    rank_offset: int  # candid offset of blocks sharing one exposure
    is_trk: np.ndarray
    trk_idx: np.ndarray  # indices of tracklet members
    trk_group: np.ndarray  # tracklet of each alert (-1: none)
    f_idx: np.ndarray  # index into the field grid
    jd: np.ndarray
    fid: np.ndarray


@dataclass(frozen=True)
class _Objects:
    """Object identity of each alert: stable (hash-keyed) for known objects, fresh otherwise."""

    pool_label: np.ndarray
    pool_k: np.ndarray
    birth_day: np.ndarray
    stable: np.ndarray  # identity (position, first detection, objectId) from the hash
    h_obj: np.ndarray
    global_index: np.ndarray
    rng: np.random.Generator

    def uo(self, j: int) -> np.ndarray:
        """Uniforms for object properties: fixed per object when it has a stable identity."""
        return np.where(self.stable, _hu(self.h_obj, j), self.rng.random(len(self.stable)))


@dataclass(frozen=True)
class _Positions:
    """Object position (ra0, dec0), its quadrant and pixel, and the measured position."""

    ra0: np.ndarray
    dec0: np.ndarray
    rcid: np.ndarray
    xpos: np.ndarray
    ypos: np.ndarray
    ra: np.ndarray
    dec: np.ndarray


def _population(blk: _Block) -> _Population:
    """Planted classes, then the population and identity source each class is drawn from."""
    n, rng = blk.n, blk.rng
    label = _assign_labels(n, rng)
    profile = _LABEL_PROFILE[label].copy()
    is_unknown = label == K_UNKNOWN
    sub = rng.random(n)
    profile[is_unknown] = np.select(
        [sub < 0.38, sub < 0.60, sub < 0.82], [P_BOGUS, P_NEW, P_TRANSIENT], P_VARSTAR
    )[is_unknown]
    is_ambiguous = label == _LABEL_INDEX[AMBIGUOUS]
    amb_sso = is_ambiguous & (rng.random(n) < 0.4)
    profile[amb_sso] = P_SSO
    source = np.select(
        [np.isin(profile, (P_VARSTAR, P_EXTRAGAL, P_MULENS)), profile == P_TRANSIENT],
        [S_POOL, S_TRANSIENT], S_NEW,
    )  # fmt: skip
    source[(profile == P_BOGUS) & (rng.random(n) < 0.1)] = S_POOL  # recurring artefacts
    cds = np.where(_LABEL_SIMBAD[label], _CDS_OF_LABEL[label], 0)
    return _Population(label, profile, is_ambiguous, amb_sso, source, cds)


def _exposures(blk: _Block, pop: _Population) -> _Exposures:
    """Exposure of each alert (weighted by alert density); tracklet members share one."""
    n, rng, plan = blk.n, blk.rng, blk.plan
    lo, hi, rank_offset = plan.block_exposures(blk.b)
    w = plan.exp_weight[lo:hi]
    e = lo + rng.choice(hi - lo, size=n, p=w / w.sum())
    is_trk = pop.label == _LABEL_INDEX[TRACKLET]
    trk_idx = np.flatnonzero(is_trk)
    trk_group = np.full(n, -1, dtype=np.int64)
    if len(trk_idx):
        sizes = rng.integers(5, 10, len(trk_idx))
        group_of = np.repeat(np.arange(len(sizes)), sizes)[: len(trk_idx)]
        if group_of[-1] > 0 and (group_of == group_of[-1]).sum() < 5:  # no tracklet under 5 points
            group_of[group_of == group_of[-1]] -= 1
        trk_group[trk_idx] = group_of
        group_exp = lo + rng.choice(hi - lo, size=group_of.max() + 1, p=w / w.sum())
        e[trk_idx] = group_exp[group_of]
    f_idx = plan.exp_field[e]
    jd = plan.exp_jd[e]
    fid = plan.exp_fid[e].astype(np.int64)
    return _Exposures(e, rank_offset, is_trk, trk_idx, trk_group, f_idx, jd, fid)


def _object_identity(blk: _Block, pop: _Population, exp: _Exposures) -> _Objects:
    """Pool objects, transients (field, birth day) and fresh objects, keyed by hashes."""
    n, rng, plan = blk.n, blk.rng, blk.plan
    label, profile, source, cds = pop.label, pop.profile, pop.source, pop.cds
    seed, grid, f_idx, jd = plan.seed, _grid(), exp.f_idx, exp.jd
    pool_label = np.where(np.isin(profile, (P_VARSTAR, P_EXTRAGAL)), cds, 0)  # Unknown pool
    pool_label = np.where(profile == P_BOGUS, _POOL_ARTEFACT, pool_label)
    # A few pool objects per (night, field, label) are "active": they alert at both visits of
    # their field, while over many nights every pool object comes back.
    n_active = np.where(pool_label == 0, 6, 3)
    slot = (rng.random(n) * n_active).astype(np.int64)
    h_active = _hash(seed, plan.night.toordinal(), grid.field_id[f_idx], pool_label, slot)
    pool_k = _hi(h_active, 1) % _POOL_K[pool_label]
    age_hi = np.select(
        [label == _LABEL_INDEX[KN], label == _LABEL_INDEX[EARLY_SN],
         np.isin(label, (_LABEL_INDEX[SN], _LABEL_INDEX[AMBIGUOUS]))],
        [3.9, 12.0, 80.0], 300.0,  # days: kilonovae < 5 and SN candidates <= 90 (class rules)
    )  # fmt: skip
    age_lo = np.where(label == _LABEL_INDEX[KN], 0.3, 1.0)
    age = np.where(age_hi > 100, np.exp(rng.uniform(np.log(age_lo), np.log(age_hi))), rng.uniform(age_lo, age_hi))
    birth_day = np.floor(jd - age - 0.5).astype(np.int64)
    # transients are born every few days per field (not for kilonovae, which must stay < 5
    # days old), so one transient is picked by several alerts and on several nights
    period = np.where(label == _LABEL_INDEX[KN], 1, 5)
    phase = _hi(_hash(seed, 5, grid.field_id[f_idx]), 1) % 5
    birth_day = birth_day - (birth_day - phase) % period
    # Keys; duplicates of one object within an exposure become new objects.
    obj_key = np.where(
        source == S_POOL, _hash(seed, 1, grid.field_id[f_idx], pool_label, pool_k),
        np.where(source == S_TRANSIENT, _hash(seed, 2, grid.field_id[f_idx], birth_day, cds), _U(0)),
    )  # fmt: skip
    known = source != S_NEW
    # the same object twice in one exposure is impossible: later ones become fresh objects
    pair = _hash(obj_key.view(np.int64), exp.e)
    _, first = np.unique(pair, return_index=True)
    dup = np.ones(n, dtype=bool)
    dup[first] = False
    fresh = dup & known
    stable = known & ~fresh  # identity (position, first detection, objectId) from the hash
    global_index = blk.b * BLOCK_SIZE + np.arange(n)
    h_obj = np.where(stable, obj_key, _hash(seed, 3, plan.night.toordinal(), global_index))
    return _Objects(pool_label, pool_k, birth_day, stable, h_obj, global_index, rng)


def _with_galaxy_hosts(pop: _Population, obj: _Objects) -> np.ndarray:
    """cdsxmatch index with host galaxies catalogued in SIMBAD as "Galaxy" (not a Fink class)."""
    galaxy_host = np.isin(pop.profile, (P_TRANSIENT, P_NEW)) & ~_LABEL_SIMBAD[pop.label] & (obj.uo(20) < 0.1)
    return np.where(galaxy_host, _CDS_INDEX["Galaxy"], pop.cds)


def _positions(blk: _Block, exp: _Exposures, obj: _Objects) -> _Positions:
    """Object positions in their field (tracklets on straight lines), plus astrometric scatter."""
    n, rng = blk.n, blk.rng
    trk_idx, trk_group = exp.trk_idx, exp.trk_group
    u1 = obj.uo(1)
    u2 = obj.uo(2)
    if len(trk_idx):  # tracklet members on a straight line across the field
        ng = trk_group.max() + 1
        anchor = rng.uniform(0.15, 0.85, (2, ng))
        angle = rng.uniform(0, 2 * np.pi, ng)
        step = rng.uniform(0.002, 0.02, ng)
        member = np.zeros(n, dtype=np.int64)
        order = np.argsort(trk_group[trk_idx], kind="stable")
        gsorted = trk_group[trk_idx][order]
        firsts = np.searchsorted(gsorted, gsorted)
        member[trk_idx[order]] = np.arange(len(order)) - firsts
        g = trk_group[trk_idx]
        u1[trk_idx] = np.clip(anchor[0, g] + np.cos(angle[g]) * step[g] * member[trk_idx], 0.001, 0.999)
        u2[trk_idx] = np.clip(anchor[1, g] + np.sin(angle[g]) * step[g] * member[trk_idx], 0.001, 0.999)
    ra0, dec0, rcid, xpos, ypos = _field_position(exp.f_idx, u1, u2)  # the object's position
    # astrometric scatter between detections of one object (~0.07 arcsec)
    dec = dec0 + rng.normal(0, 0.07, n) / 3600.0
    ra = (ra0 + rng.normal(0, 0.07, n) / 3600.0 / np.cos(np.radians(dec))) % 360.0
    return _Positions(ra0, dec0, rcid, xpos, ypos, ra, dec)


def _candidate_ids(blk: _Block, exp: _Exposures, rcid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pid, tblid, candid) as ZTF builds them: candid is unique within and across nights."""
    n, rng, plan = blk.n, blk.rng, blk.plan
    jd = exp.jd
    frac5 = np.floor(((jd - 0.5) % 1.0) * 1e5).astype(np.int64)
    pid = plan.nid * 10**9 + frac5 * 10**4 + rcid * 100 + 15
    # tblid: increasing index in the quadrant's candidate table (most candidates are not
    # alerts, hence the random gaps); unique per (exposure, rcid), so candid is unique.
    qkey = exp.e * 64 + rcid
    order = np.argsort(qkey, kind="stable")
    sorted_key = qkey[order]
    first = np.searchsorted(sorted_key, sorted_key)
    gaps = rng.geometric(1.0 / 9.0, n) if exp.rank_offset == 0 else np.ones(n, dtype=np.int64)
    csum = np.cumsum(gaps)
    tblid = np.empty(n, dtype=np.int64)
    tblid[order] = csum - np.concatenate(([0], csum))[first] - 1
    suffix = 10000 + exp.rank_offset + tblid
    candid = pid * 10**6 + suffix
    return pid, tblid, candid


def _object_ids(blk: _Block, pop: _Population, exp: _Exposures,
                obj: _Objects) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(objectId, first detection jd of pool objects, birth jd of transients).

    Pool objects first detected 2018-2019 (odd numbers), transients by birth day and new
    objects by night and index (even numbers): never two objects with one id.
    """
    n, plan, grid = blk.n, blk.plan, _grid()
    h_obj, stable, f_idx, cds, source = obj.h_obj, obj.stable, exp.f_idx, pop.cds, pop.source
    first_det = JD_SURVEY_START + _hu(h_obj, 3) * (JD_POOL_FIRSTDET_END - JD_SURVEY_START)
    birth_jd = obj.birth_day + 0.5 + 0.08 + 0.47 * _hu(h_obj, 4)
    year_first, _, _ = _utc_ymd(first_det)
    year_birth, _, _ = _utc_ymd(birth_jd)
    year_night = np.full(n, plan.night.year)
    doy_birth = (np.floor(birth_jd - 0.5).astype(np.int64) - 2440588 + 719163)  # days since 0001-01-01
    n_fields = len(grid.field_id)
    pool_number = ((obj.pool_k * (len(_CDS_VOCAB) + 1) + obj.pool_label) * n_fields + f_idx) * 2 + 1
    # transients: one per (field, birth day) and per catalogued class (SN, ... or none)
    trans_number = ((cds * 366 + doy_birth % 366) * n_fields + f_idx) * 4  # multiple of 4
    new_number = ((obj.global_index * 366 + plan.night.timetuple().tm_yday) * 2 + 1) * 2  # 2 mod 4
    is_pool, is_trans = stable & (source == S_POOL), stable & (source == S_TRANSIENT)
    yy = np.select([is_pool, is_trans], [year_first, year_birth], year_night)
    number = np.select([is_pool, is_trans], [pool_number, trans_number], new_number)
    return _encode_object_ids(yy, number % (26**7)), first_det, birth_jd
