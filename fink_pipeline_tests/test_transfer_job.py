"""The Spark transfer job against an independent pandas/numpy reference, request option by option.

A generated archive (2 nights x 2,500 ZTF alerts, no cutouts) is read with pyarrow and every
selection is recomputed without Spark and without the code under test: `finkclass` by the
pandas transliteration of Fink's code (test_ztf_classification), `tnsclass` by a brute-force
haversine search of a small TNS catalogue, conditions and live-stream filters by hand-written
pandas/numpy expressions. Then:

* the number of alerts `build_transfer_dataframe` selects equals the reference count for more
  than ten requests (classes of every group, conditions, filters, combinations, limit);
* each live-stream filter of `LIVESTREAM_FILTERS` selects exactly the reference alerts;
* each content type (light, medium, full, custom with a map key and the appended candidate.jd)
  publishes the expected columns and values;
* the job logs Fink's milestone lines plus counts from the nightly statistics;
* a light-packet job reads less than a tenth of the bytes of a full-packet job (Spark input
  metrics and Parquet footers, on an archive with cutouts).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.archive.stats import night_files, tns_catalog_path, update_statistics
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.ztf import filters as FL
from fink_pipeline.surveys.ztf.classification import FINK_CLASS_LABELS, FINKCLASS_INPUT_COLUMNS
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.select import build_transfer_dataframe
from fink_pipeline.transfer.request import request_from_mapping
from fink_pipeline_tests.test_ztf_classification import (
    fink_reference_finkclass,
    fink_reference_flags,
    to_pandas_inputs,
)

START = dt.date(2024, 3, 1)
NIGHT1, NIGHT2 = START, START + dt.timedelta(days=1)
ALERTS_PER_NIGHT = 2_500
TNS_RADIUS_DEG = 1.5 / 3600.0
ZTF = get_survey("ztf")


# --------------------------------------------------------------------------------------------
# Independent reference
# --------------------------------------------------------------------------------------------


def tns_catalog_from_archive(root: str, night: dt.date, n: int = 40) -> pa.Table:
    """A raw TNS catalogue: the positions of `n` of the night's alerts (distinct objects), with
    types, plus a few sources far from any alert."""
    table = pq.read_table([p for p, _ in night_files(root, "ztf", night)], columns=["objectId", "candidate"])
    frame = pd.DataFrame({
        "objectId": table.column("objectId").to_pylist(),
        "ra": [c["ra"] for c in table.column("candidate").to_pylist()],
        "dec": [c["dec"] for c in table.column("candidate").to_pylist()],
    }).drop_duplicates("objectId").iloc[:n]
    types = ["SN Ia", "SN II", "TDE", "SLSN-I"]
    return pa.table({
        "ra": list(frame["ra"]) + [10.0, 200.0],
        "declination": list(frame["dec"]) + [-80.0, 80.0],
        "type": [types[i % len(types)] for i in range(len(frame))] + ["SN Ia", "AGN"],
    })


def reference_tnsclass(ra: np.ndarray, dec: np.ndarray, catalog: pa.Table | None) -> np.ndarray:
    """Nearest catalogue source closer than 1.5 arcsec (brute force), '(TNS) <type>', else Unknown."""
    out = np.full(len(ra), "Unknown", dtype=object)
    if catalog is None:
        return out
    c_ra = np.asarray(catalog.column("ra").to_pylist(), float)
    c_dec = np.asarray(catalog.column("declination").to_pylist(), float)
    c_type = catalog.column("type").to_pylist()
    r1, d1 = np.radians(ra)[:, None], np.radians(dec)[:, None]
    r2, d2 = np.radians(c_ra)[None, :], np.radians(c_dec)[None, :]
    sep = np.degrees(2 * np.arcsin(np.sqrt(np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2)))
    best = np.argmin(sep, axis=1)
    close = sep[np.arange(len(ra)), best] < TNS_RADIUS_DEG
    for i in np.flatnonzero(close):
        kind = c_type[best[i]]
        out[i] = kind if kind.startswith("(TNS) ") else f"(TNS) {kind}"
    return out


def _r_band_r2(prv: list | None, current: dict) -> float:
    """R^2 of a straight line fitted to the r-band magnitudes of the history (nan if not computable)."""
    points = list(prv or []) + [current]
    xs, ys = [], []
    for p in points:
        mag = p.get("magpsf")
        if p.get("fid") == 2 and mag is not None and not math.isnan(mag) and p.get("jd") is not None:
            xs.append(float(p["jd"]))
            ys.append(float(mag))
    if len(xs) < FL.SPICY_MIN_POINTS:
        return math.nan
    x, y = np.asarray(xs), np.asarray(ys)
    if np.sum((x - x.mean()) ** 2) == 0 or np.sum((y - y.mean()) ** 2) == 0:
        return math.nan
    slope, intercept = np.polyfit(x, y, 1)
    return 1.0 - np.sum((y - (slope * x + intercept)) ** 2) / np.sum((y - y.mean()) ** 2)


def archive_frame(root: str, nights: list[dt.date]) -> pd.DataFrame:
    """One row per archived alert of `nights` with every value the reference selections use
    (`tnsclass` without a catalogue: see `with_tns`)."""
    frames = []
    for night in nights:
        table = pq.read_table([p for p, _ in night_files(root, "ztf", night)])
        inputs = to_pandas_inputs(table, FINKCLASS_INPUT_COLUMNS)
        cand = pd.DataFrame(table.column("candidate").to_pylist())
        frame = pd.DataFrame({
            "candid": table.column("candid").to_pylist(),
            "night": night,
            "finkclass": fink_reference_finkclass(inputs),
            "cdsxmatch": table.column("cdsxmatch").to_pylist(),
            "roid": table.column("roid").to_pandas().astype(float),
            "tns": table.column("tns").to_pylist(),
            "spicy_class": table.column("spicy_class").to_pylist(),
            "mangrove": [dict(m) if m is not None else None for m in table.column("mangrove").to_pylist()],
            "n_prv": pc_list_size(table.column("prv_candidates")),
        })
        for name in ("magpsf", "sigmapsf", "fid", "ndethist", "drb", "jd", "jdstarthist", "ra", "dec"):
            frame[name] = cand[name].astype(float).to_numpy()
        frame["tnsclass"] = reference_tnsclass(frame.ra.to_numpy(), frame.dec.to_numpy(), None)
        for key, values in fink_reference_flags(inputs).items():
            frame[f"flag_{key}"] = np.asarray(values, dtype=bool)
        frame["unknown_without_tracklet"] = fink_reference_finkclass(inputs, tracklet=pd.Series([""] * len(inputs))) == "Unknown"
        slopes = [r["linear_fit_slope"] if r else None for r in table.column("lc_features_r").to_pylist()]
        frame["slope_r"] = pd.Series(slopes, dtype=float).to_numpy()
        # R^2 only where the SPICY rule can pass (decoding every history in Python is slow)
        spicy = np.flatnonzero((frame.spicy_class.notna() & (frame.spicy_class != "Unknown")).to_numpy())
        r2 = np.full(len(frame), np.nan)
        if spicy.size:
            subset = table.take(pa.array(spicy))
            prv, current = subset.column("prv_candidates").to_pylist(), subset.column("candidate").to_pylist()
            r2[spicy] = [_r_band_r2(p, c) for p, c in zip(prv, current)]
        frame["r2_r"] = r2
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def pc_list_size(column: pa.ChunkedArray) -> list:
    """Length of each list (None for a null list)."""
    import pyarrow.compute as pc

    return pc.list_value_length(column).to_pylist()


def with_tns(frame: pd.DataFrame, catalog: pa.Table) -> pd.DataFrame:
    """The reference frame with tnsclass matched against `catalog`."""
    out = frame.copy()
    out["tnsclass"] = reference_tnsclass(frame.ra.to_numpy(), frame.dec.to_numpy(), catalog)
    return out


def reference_filter(frame: pd.DataFrame, name: str) -> pd.Series:
    """Rows the live-stream filter `name` keeps, computed in pandas (pandas null semantics)."""
    f = frame
    age = f.jd - f.jdstarthist
    by_flag = {
        "early_sn_candidates": "sn_early", "sn_candidates": "sn", "kn_candidates": "kn",
        "microlensing_candidates": "mulens", "sso_ztf_candidates": "roid_3", "sso_fink_candidates": "roid_2",
        "tracklet_candidates": "tracklet", "simbad_candidates": "simbad",
    }  # fmt: skip
    if name in by_flag:
        return f[f"flag_{by_flag[name]}"]
    if name == "unknowns":
        return f["unknown_without_tracklet"]
    if name == "blazar":
        return f.cdsxmatch.isin(["Blazar", "Blazar_Candidate", "BLLac", "BLLac_Candidate"])
    if name == "yso_candidates":
        return f.cdsxmatch.isin(["Candidate_YSO", "Candidate_TTau*", "YSO_Candidate", "TTau*_Candidate"])
    if name == "simbad_grav_candidates":
        return f.cdsxmatch.isin(["Gravitation", "LensingEv", "GravLensSystem", "GravLens", "LensedImage",
                                 "LensedG", "LensedQ", "BlackHole", "GravWaveEvent"])
    if name == "tns_match":
        return f.tns.apply(lambda t: t != "") & (age <= 30)
    if name == "vra":
        return (f.cdsxmatch == "Unknown") & (f.roid != 3) & (f.magpsf > 19.5) & (f.drb > 0.5)
    if name == "yso_spicy_candidates":
        spicy = f.spicy_class.notna() & (f.spicy_class != "Unknown")
        return spicy & (f.slope_r.abs() > 0.025) & (f.r2_r > 0.6)
    raise KeyError(name)


def in_classes(frame: pd.DataFrame, classes: list[str]) -> pd.Series:
    """The class filter: TNS labels on tnsclass, the others (SIMBAD prefix removed) on finkclass."""
    if not classes:
        return pd.Series(True, index=frame.index)
    tns = [c for c in classes if c.startswith("(TNS) ")]
    fink = [c.removeprefix("(SIMBAD) ") for c in classes if not c.startswith("(TNS) ")]
    return frame.finkclass.isin(fink) | frame.tnsclass.isin(tns)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("job_archive"))
    generate_archive(ZTF, root, START, nights=2, alerts_per_night=ALERTS_PER_NIGHT, seed=11, with_cutouts=False)
    return root


@pytest.fixture(scope="module")
def tns_catalog(archive) -> pa.Table:
    return tns_catalog_from_archive(archive, NIGHT1)


@pytest.fixture(scope="module")
def reference(archive) -> pd.DataFrame:
    return archive_frame(archive, [NIGHT1, NIGHT2])


@pytest.fixture(scope="module")
def reference_tns(reference, tns_catalog) -> pd.DataFrame:
    return with_tns(reference, tns_catalog)


def plan_for(root: str, tns_catalog=None, **fields):
    fields.setdefault("start", NIGHT1.isoformat())
    fields.setdefault("stop", NIGHT2.isoformat())
    request = request_from_mapping(fields)
    return plan_transfer(request, root, list_nights(root, "ztf"), tns_catalog=tns_catalog)


def test_reference_archive_has_every_fink_label_and_tns_matches(reference, reference_tns) -> None:
    """The fixtures are meaningful: every Fink label occurs, and the catalogue matches alerts."""
    assert set(FINK_CLASS_LABELS) <= set(reference.finkclass)
    assert reference.finkclass.nunique() > 30  # plus many SIMBAD labels
    assert (reference_tns.tnsclass != "Unknown").sum() >= 40
    assert (reference.tnsclass == "Unknown").all()


# --------------------------------------------------------------------------------------------
# Counts: job vs reference
# --------------------------------------------------------------------------------------------

# (id, request fields, reference predicate on the frame, needs the TNS catalogue)
COUNT_CASES = [
    ("all-classes-one-night", dict(stop=NIGHT1.isoformat()), lambda f: f.night == NIGHT1, False),
    ("all-classes-missing-night", dict(stop=(NIGHT2 + dt.timedelta(days=1)).isoformat()), lambda f: f.night >= NIGHT1, False),
    ("fink-labels", dict(classes=["SN candidate", "Early SN Ia candidate", "Kilonova candidate", "Ambiguous"]),
     lambda f: in_classes(f, ["SN candidate", "Early SN Ia candidate", "Kilonova candidate", "Ambiguous"]), False),
    ("simbad-labels", dict(classes=["(SIMBAD) RRLyr", "EB*", "(SIMBAD) QSO"]),
     lambda f: in_classes(f, ["RRLyr", "EB*", "QSO"]), False),
    ("tns-and-fink", dict(classes=["(TNS) SN Ia", "(TNS) TDE", "SN candidate"]),
     lambda f: in_classes(f, ["(TNS) SN Ia", "(TNS) TDE", "SN candidate"]), True),
    ("class-and-condition", dict(classes=["Unknown"], conditions=["candidate.magpsf > 19"]),
     lambda f: (f.finkclass == "Unknown") & (f.magpsf > 19), False),
    ("two-conditions", dict(classes=["Solar System MPC", "Unknown"], conditions=["candidate.ndethist > 2", "candidate.fid = 1"]),
     lambda f: in_classes(f, ["Solar System MPC", "Unknown"]) & (f.ndethist > 2) & (f.fid == 1), False),
    ("filter-class-condition", dict(classes=["Unknown", "RRLyr"], livestream_filter="vra", conditions=["candidate.ndethist >= 1"]),
     lambda f: in_classes(f, ["Unknown", "RRLyr"]) & reference_filter(f, "vra") & (f.ndethist >= 1), False),
    ("filter-and-ratio", dict(livestream_filter="sn_candidates", conditions=["candidate.magpsf / candidate.sigmapsf > 10"]),
     lambda f: reference_filter(f, "sn_candidates") & (f.magpsf / f.sigmapsf > 10), False),
    ("map-key-condition", dict(conditions=["mangrove.HyperLEDA_name != 'None'"]),
     lambda f: f.mangrove.apply(lambda m: m is not None and m.get("HyperLEDA_name") not in (None, "None")), False),
    ("history-condition", dict(conditions=["size(prv_candidates) > 5"]), lambda f: f.n_prv > 5, False),
    ("finkclass-condition", dict(conditions=["finkclass = 'Unknown' AND candidate.magpsf > 18.5 OR roid = 3"]),
     lambda f: ((f.finkclass == "Unknown") & (f.magpsf > 18.5)) | (f.roid == 3), False),
    ("partition-condition", dict(conditions=["day = 2", "candidate.drb > 0.9"]),
     lambda f: (f.night == NIGHT2) & (f.drb > 0.9), False),
]


@pytest.fixture(scope="module")
def job_counts(spark, archive, tns_catalog) -> dict[str, int]:
    """`build_transfer_dataframe` of every COUNT_CASES request, counted in one Spark query (the
    per-request frames are unioned and grouped by case: one job instead of one per request)."""
    from functools import reduce

    from pyspark.sql import functions as F

    frames = []
    for case_id, fields, _, needs_tns in COUNT_CASES:
        df = build_transfer_dataframe(spark, plan_for(archive, tns_catalog if needs_tns else None, **fields))
        frames.append(df.select(F.lit(case_id).alias("case")))
    rows = reduce(lambda a, b: a.unionByName(b), frames).groupBy("case").count().collect()
    return {r["case"]: r["count"] for r in rows}


@pytest.mark.spark
@pytest.mark.parametrize(("case_id", "predicate", "with_tns"), [(c[0], c[2], c[3]) for c in COUNT_CASES],
                         ids=[c[0] for c in COUNT_CASES])
def test_job_count_equals_reference(job_counts, reference, reference_tns, case_id, predicate, with_tns) -> None:
    expected = int(predicate(reference_tns if with_tns else reference).sum())
    assert expected > 0, "the case must select something to be meaningful"
    assert job_counts.get(case_id, 0) == expected


@pytest.mark.spark
def test_single_request_count(spark, archive, reference) -> None:
    """The plain form of the above for one request: `.count()` of the job's DataFrame."""
    plan = plan_for(archive, classes=["Unknown", "EB*"], conditions=["candidate.magpsf > 18.5"])
    expected = int((in_classes(reference, ["Unknown", "EB*"]) & (reference.magpsf > 18.5)).sum())
    assert build_transfer_dataframe(spark, plan).count() == expected


@pytest.mark.spark
def test_combined_request_selects_exactly_the_reference_alerts(spark, archive, reference_tns, tns_catalog) -> None:
    """Classes of all three groups, two conditions and a filter: same candids, not only as many."""
    classes = ["Unknown", "(SIMBAD) RRLyr", "(TNS) SN Ia", "Solar System MPC"]
    plan = plan_for(archive, tns_catalog, classes=classes, livestream_filter="unknowns",
                    conditions=["candidate.magpsf > 17", "candidate.drb > 0.3"], content=["candid", "finkclass"])
    f = reference_tns
    keep = in_classes(f, classes) & reference_filter(f, "unknowns") & (f.magpsf > 17) & (f.drb > 0.3)
    selected = build_transfer_dataframe(spark, plan).toPandas()
    assert keep.sum() > 0
    assert sorted(selected.candid) == sorted(f.candid[keep])
    assert set(selected.finkclass) <= {"Unknown", "RRLyr", "Solar System MPC"} | set(f.finkclass[f.tnsclass == "(TNS) SN Ia"])


@pytest.mark.spark
def test_limit_caps_the_selection(spark, archive) -> None:
    plan = plan_for(archive, classes=["Unknown"], limit=7)
    df = build_transfer_dataframe(spark, plan)
    assert df.count() == 7
    # the same rows on every evaluation (a retried publication must find them again): the
    # first alert ids of the selection
    everything = build_transfer_dataframe(spark, plan_for(archive, classes=["Unknown"]))
    first = sorted(r.candid for r in everything.select("candid").collect())[:7]
    assert sorted(r.candid for r in df.select("candid").collect()) == first
    assert "TakeOrderedAndProject" in df._jdf.queryExecution().executedPlan().toString()


@pytest.mark.spark
def test_finkclass_distribution_equals_reference(spark, archive, reference) -> None:
    """Every class group at once: the job's finkclass of every alert equals the reference."""
    plan = plan_for(archive, content=["candid", "finkclass", "tnsclass"])
    got = build_transfer_dataframe(spark, plan).toPandas().set_index("candid").sort_index()
    want = reference.set_index("candid").sort_index()
    assert (got.finkclass == want.finkclass).all()
    assert (got.tnsclass == "Unknown").all()


@pytest.mark.spark
def test_tns_catalogue_of_the_archive_is_found(spark, archive, reference_tns, tns_catalog, tmp_path) -> None:
    """`<root>/ztf/tns/tns.parquet` feeds tnsclass without being passed explicitly."""
    root = tmp_path / "with_tns"
    (root / "ztf").mkdir(parents=True)
    os.symlink(Path(archive) / "ztf" / "science", root / "ztf" / "science")
    catalog_file = Path(tns_catalog_path(str(root), "ztf"))
    catalog_file.parent.mkdir(parents=True)
    pq.write_table(tns_catalog, catalog_file)
    plan = plan_for(str(root), classes=["(TNS) SN II", "(TNS) SLSN-I"])
    assert plan.tns_catalog is not None and not plan.notes
    expected = int(in_classes(reference_tns, ["(TNS) SN II", "(TNS) SLSN-I"]).sum())
    assert expected > 0
    assert build_transfer_dataframe(spark, plan).count() == expected


# --------------------------------------------------------------------------------------------
# Live-stream filters, one by one
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filter_selections(spark, archive) -> dict[str, list[int]]:
    """candids each live-stream filter's transfer selects (all filters in one Spark query)."""
    from functools import reduce

    from pyspark.sql import functions as F

    frames = [
        build_transfer_dataframe(spark, plan_for(archive, livestream_filter=name, content=["candid"]))
        .withColumn("filter", F.lit(name))
        for name in sorted(FL.LIVESTREAM_FILTERS)
    ]
    selected: dict[str, list[int]] = {name: [] for name in FL.LIVESTREAM_FILTERS}
    for row in reduce(lambda a, b: a.unionByName(b), frames).collect():
        selected[row["filter"]].append(row["candid"])
    return selected


@pytest.mark.spark
@pytest.mark.parametrize("name", sorted(FL.LIVESTREAM_FILTERS))
def test_each_livestream_filter_selects_the_reference_alerts(filter_selections, reference, name) -> None:
    expected = sorted(reference.candid[reference_filter(reference, name)])
    assert sorted(filter_selections[name]) == expected


def test_filters_are_resolved_by_module_path_and_rejected_with_the_field_name(archive) -> None:
    plan = plan_for(archive, livestream_filter="fink_filters.ztf.livestream.filter_vra.filter.vra")
    assert [s.function.name for s in plan.selections] == ["vra"]
    with pytest.raises(ValueError, match=r"^filters: unknown livestream filter 'sn_candidate'.*sn_candidates"):
        plan_for(archive, livestream_filter="sn_candidate")
    with pytest.raises(ValueError, match=r"^filters: .*cannot be replayed natively"):
        plan_for(archive, livestream_filter="early_kn_candidates")


# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_light_packet_flattens_candidate_fields_and_drops_heavy_columns(spark, archive) -> None:
    df = build_transfer_dataframe(spark, plan_for(archive, stop=NIGHT1.isoformat(), content="light"))
    names = df.columns
    assert names[:7] == ["magpsf", "sigmapsf", "fid", "jd", "ra", "dec", "ssnamenr"]
    assert not {"candidate", "prv_candidates", "cutoutScience", "cutoutTemplate", "cutoutDifference"} & set(names)
    assert {"candid", "objectId", "cdsxmatch", "finkclass", "tnsclass", "mangrove"} <= set(names)
    assert not {"year", "month", "day"} & set(names)


@pytest.mark.spark
@pytest.mark.parametrize("packet", ["medium", "full"])
def test_medium_and_full_packets(spark, archive, packet) -> None:
    df = build_transfer_dataframe(spark, plan_for(archive, stop=NIGHT1.isoformat(), content=packet))
    names = set(df.columns)
    schema_names = set(ZTF.archive_schema.names)
    cutouts = {"cutoutScience", "cutoutTemplate", "cutoutDifference"}
    expected = schema_names | {"finkclass", "tnsclass", "year", "month", "day"}
    assert names == (expected if packet == "full" else expected - cutouts)


@pytest.mark.spark
def test_custom_content_with_a_map_key_and_the_appended_time_column(spark, archive, reference) -> None:
    plan = plan_for(archive, content=["candid", "candidate.magpsf", "mangrove.HyperLEDA_name", "finkclass"])
    df = build_transfer_dataframe(spark, plan)
    # candidate.jd is appended: clients partition on it (Fink does the same)
    assert df.columns == ["candid", "magpsf", "HyperLEDA_name", "finkclass", "jd"]
    got = df.toPandas().set_index("candid").sort_index()
    want = reference.set_index("candid").sort_index()
    assert list(got.HyperLEDA_name) == [m.get("HyperLEDA_name") if m else None for m in want.mangrove]
    assert np.allclose(got.jd.to_numpy(float), want.jd.to_numpy(float))
    assert (got.finkclass == want.finkclass).all()
    # asked explicitly, candidate.jd is not appended twice
    plan = plan_for(archive, content=["candidate.jd", "candid"])
    assert build_transfer_dataframe(spark, plan).columns == ["jd", "candid"]


def test_custom_content_errors_name_the_field(archive) -> None:
    with pytest.raises(ValueError, match=r"^content: unknown field 'candidate.magpsff'.*did you mean 'candidate.magpsf'"):
        plan_for(archive, content=["candidate.magpsff"])
    with pytest.raises(ValueError, match=r"^content: several fields would be published under the same name \['mean'\]"):
        plan_for(archive, content=["lc_features_g.mean", "lc_features_r.mean"])
    with pytest.raises(ValueError, match=r"^content \['light', 'candid'\]: a packet \(light\) cannot be combined"):
        plan_for(archive, content=["light", "candid"])


# --------------------------------------------------------------------------------------------
# Classes: validation before Spark
# --------------------------------------------------------------------------------------------


def test_unknown_classes_are_rejected_with_the_closest_label(archive, tns_catalog) -> None:
    # without statistics: Fink labels are checked, a near miss is an error
    with pytest.raises(ValueError, match=r"^classes: 'SN candidat' is not a Fink class; did you mean 'SN candidate'"):
        plan_for(archive, classes=["SN candidat"])
    with pytest.raises(ValueError, match=r"did you mean 'Kilonova candidate'\? \(labels are case-sensitive\)"):
        plan_for(archive, classes=["kilonova candidate"])
    # an unverifiable SIMBAD type is kept, with a warning
    assert "cannot be checked" in plan_for(archive, classes=["RRLyr"]).notes[0]
    # TNS: a type of the catalogue, or a warning without one
    with pytest.raises(ValueError, match=r"^classes: '\(TNS\) SN Iax' is not a type of the TNS catalogue; did you mean '\(TNS\) SN Ia'"):
        plan_for(archive, tns_catalog, classes=["(TNS) SN Iax"])
    assert "needs a TNS catalogue" in plan_for(archive, classes=["(TNS) SN Ia"]).notes[0]
    with pytest.raises(ValueError, match=r"^classes: '\(TNS\)SN Ia' is not a TNS class"):
        plan_for(archive, classes=["(TNS)SN Ia"])


def test_classes_are_checked_against_the_nightly_statistics(archive, tmp_path) -> None:
    root = tmp_path / "with_stats"
    (root / "ztf").mkdir(parents=True)
    os.symlink(Path(archive) / "ztf" / "science", root / "ztf" / "science")
    update_statistics(ZTF, str(root))
    assert plan_for(str(root), classes=["RRLyr", "(SIMBAD) EB*", "SN candidate"]).notes == []
    with pytest.raises(ValueError, match=r"^classes: unknown class 'RRlyr'; did you mean 'RRLyr'"):
        plan_for(str(root), classes=["RRlyr"])
    with pytest.raises(ValueError, match=r"^classes: unknown class '\(SIMBAD\) Mirra'; did you mean 'Mira'"):
        plan_for(str(root), classes=["(SIMBAD) Mirra"])
    # a SIMBAD type the rules name but no statistics has seen: accepted with a warning
    assert "no alert of class 'BlueCompG'" in plan_for(str(root), classes=["BlueCompG"]).notes[0]
    # so is an explicit, unseen SIMBAD type that is no near miss; bare, it is an error
    assert "does not occur in the nightly statistics" in plan_for(str(root), classes=["(SIMBAD) Pulsar"]).notes[0]
    with pytest.raises(ValueError, match=r"^classes: unknown class 'Pulsar'; did you mean 'PulsV\*'\?"):
        plan_for(str(root), classes=["Pulsar"])


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_job_logs_fink_milestones_and_counts(spark, archive, tmp_path, caplog) -> None:
    root = tmp_path / "logged"
    (root / "ztf").mkdir(parents=True)
    os.symlink(Path(archive) / "ztf" / "science", root / "ztf" / "science")
    update_statistics(ZTF, str(root))
    plan = plan_for(str(root), stop=(NIGHT2 + dt.timedelta(days=1)).isoformat(), classes=["Unknown"],
                    conditions=["candidate.magpsf > 19"], livestream_filter="vra", limit=5)
    with caplog.at_level(logging.INFO, logger="fink_pipeline.job"):
        build_transfer_dataframe(spark, plan)
    lines = [r.getMessage() for r in caplog.records if r.name == "fink_pipeline.job"]
    expected_order = ["Generating data paths...", "No alert data for night 2024-03-03", "Reading 2 nights",
                      "Filtering for classes ['Unknown']...", "alerts of these classes according to the nightly statistics",
                      "Applying extra conditions", "Applying user-defined filter", "Selecting content", "Limiting to 5"]
    positions = [next(i for i, line in enumerate(lines) if fragment in line) for fragment in expected_order]
    assert positions == sorted(positions)
    assert f"({2 * ALERTS_PER_NIGHT:,} alerts according to the nightly statistics)" in lines[positions[2]]


# --------------------------------------------------------------------------------------------
# Bytes read: light vs full
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive_with_cutouts(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("cutout_archive"))
    generate_archive(ZTF, root, START, nights=2, alerts_per_night=500, seed=5, with_cutouts=True)
    return root


@pytest.mark.spark
def test_light_packet_reads_less_than_a_tenth_of_full(spark, archive_with_cutouts) -> None:
    from fink_pipeline.transfer.metrics import footer_input_bytes, measure_input_bytes

    files = [p for n in (NIGHT1, NIGHT2) for p, _ in night_files(archive_with_cutouts, "ztf", n)]
    measured, footer = {}, {}
    for packet in ("light", "full"):
        plan = plan_for(archive_with_cutouts, content=packet)
        metrics = measure_input_bytes(spark, build_transfer_dataframe(spark, plan))
        assert metrics.records_read == 1000
        measured[packet] = metrics.bytes_read
        footer[packet] = footer_input_bytes(files, plan.read_fields()).bytes
    everything = footer_input_bytes(files).bytes
    # full reads every column chunk (plus footers); light much less than a tenth
    assert footer["full"] == everything
    assert everything <= measured["full"] <= everything * 1.1
    assert measured["light"] < measured["full"] / 10
    assert footer["light"] < footer["full"] / 10
    # and the measure does not leak its settings into the session
    assert spark.conf.get("parquet.hadoop.vectored.io.enabled", None) is None
