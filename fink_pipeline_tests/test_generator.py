"""Synthetic ZTF nights (`surveys.ztf.generator`) and the archive writer (`archive.generate`).

The Fink classification used to check the planted classes is re-implemented here from
reference section 3.1 with pandas, independently of the generator's own rule copy and of
`surveys.ztf.classification`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights, night_dir, parse_night, science_root
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.ztf.generator import BLOCK_SIZE, generate_night
from fink_pipeline.surveys.ztf.schema import ARCHIVE_SCHEMA, CUTOUT_COLUMNS

NIGHT = dt.date(2024, 4, 10)
SEED = 11
N_NIGHT = 5000
JD_UNIX = 2440587.5

FINK_LABELS = (
    "Unknown", "Early SN Ia candidate", "SN candidate", "Kilonova candidate", "Microlensing candidate",
    "Solar System MPC", "Solar System candidate", "Tracklet", "Ambiguous",
)  # fmt: skip
# SIMBAD labels the brief asks for (plus the grav-lens one the simbad_grav filter needs)
SIMBAD_LABELS = (
    "RRLyr", "EB*", "QSO", "LPV*", "Mira", "YSO_Candidate", "V*", "Star", "AGN", "Blazar", "BLLac",
    "Seyfert_1", "CataclyV*", "LensedQ",
)  # fmt: skip
# real ZTF stamps in ../shared/data weigh 7.7-15.0 kB (gzipped FITS)
REAL_STAMP_RANGE = (7_000, 16_000)


def _table(night=NIGHT, n=N_NIGHT, seed=SEED, **kwargs) -> pa.Table:
    return pa.Table.from_batches(list(generate_night(night, n, seed, **kwargs)), schema=ARCHIVE_SCHEMA)


@pytest.fixture(scope="module")
def night() -> pa.Table:
    return _table(with_cutouts=False)


@pytest.fixture(scope="module")
def night_cutouts() -> pa.Table:
    return _table(n=600, with_cutouts=True, batch_size=250)


def _cand(table: pa.Table, name: str) -> np.ndarray:
    return table.column("candidate").combine_chunks().field(name).to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------------------------
# Independent finkclass (reference section 3.1)
# --------------------------------------------------------------------------------------------

EG_LIST = [
    "Unknown", "Candidate_SN*", "SN", "Transient", "Fail", "Fail 504", "SN*_Candidate",
    "galaxy", "Galaxy", "EmG", "Seyfert", "Seyfert_1", "Seyfert_2", "BlueCompG", "StarburstG", "LSB_G",
    "HII_G", "High_z_G", "GinPair", "GinGroup", "BClG", "GinCl", "PartofG", "Compact_Gr_G", "IG", "PairG",
    "GroupG", "ClG", "SuperClG", "Void", "LINER", "Possible_ClG", "Possible_SClG", "GravLens_Candidate",
]  # fmt: skip


def reference_finkclass(table: pa.Table) -> pd.Series:
    """extract_fink_classification_ written from the reference text, on a pandas frame."""
    df = pd.DataFrame({
        "cdsxmatch": table.column("cdsxmatch").to_pandas(),
        "roid": table.column("roid").to_pandas(),
        "mulens": table.column("mulens").to_pandas(),
        "snn1": table.column("snn_snia_vs_nonia").to_pandas(),
        "snn2": table.column("snn_sn_vs_all").to_pandas(),
        "rf": table.column("rf_snia_vs_nonia").to_pandas(),
        "kn": table.column("rf_kn_vs_nonkn").to_pandas(),
        "tracklet": table.column("tracklet").to_pandas(),
        "ndethist": _cand(table, "ndethist"),
        "drb": _cand(table, "drb"),
        "classtar": _cand(table, "classtar"),
        "jd": _cand(table, "jd"),
        "jdstarthist": _cand(table, "jdstarthist"),
    })  # fmt: skip
    in_eg = df.cdsxmatch.isin(EG_LIST)
    snn = (df.snn1 > 0.5) | (df.snn2 > 0.5)
    age = df.jd - df.jdstarthist
    f_tracklet = df.tracklet.astype(str).str.startswith("TRCK_")
    f_simbad = ~df.cdsxmatch.isin(["Unknown", "Transient", "Fail", "Fail 504"])
    f_simbad &= ~df.cdsxmatch.str.startswith("Fail") & ~df.cdsxmatch.str.startswith("Galaxy")
    f_early = snn & in_eg & (df.drb > 0.5) & (df.classtar > 0.4) & (df.ndethist <= 20) & (df.rf > 0.5)
    f_sn = snn & in_eg & (age <= 90) & (df.drb > 0.5) & (df.classtar > 0.4) & (df.ndethist > 1) & (df.roid != 3)
    f_mulens = df.mulens > 0.0
    f_kn = (df.kn > 0.5) & (df.drb > 0.5) & (df.classtar > 0.4) & (age < 5) & (df.roid != 3)
    f_kn &= (df.ndethist < 20) & in_eg
    f_roid3, f_roid2 = df.roid == 3, df.roid == 2
    out = pd.Series("Unknown", index=df.index, dtype=object)
    for flag, name in ((f_mulens, "Microlensing candidate"), (f_sn, "SN candidate"), (f_early, "Early SN Ia candidate"),
                       (f_kn, "Kilonova candidate"), (f_roid2, "Solar System candidate"), (f_tracklet, "Tracklet"),
                       (f_roid3, "Solar System MPC")):  # fmt: skip
        out[flag] = name
    ambiguous = f_mulens.astype(int) + f_sn.astype(int) + f_roid2.astype(int) + f_roid3.astype(int) > 1
    out[ambiguous] = "Ambiguous"
    out[f_simbad] = df.cdsxmatch[f_simbad]
    return out


# --------------------------------------------------------------------------------------------
# Schema, determinism, batching
# --------------------------------------------------------------------------------------------


def test_schema_is_exactly_the_archive_schema(night, night_cutouts):
    for table in (night, night_cutouts):
        assert table.schema.equals(ARCHIVE_SCHEMA, check_metadata=True)
        assert table.schema.names == ARCHIVE_SCHEMA.names
    for batch in generate_night(NIGHT, 300, SEED, with_cutouts=False, batch_size=128):
        assert batch.schema.equals(ARCHIVE_SCHEMA)
    assert not {"year", "month", "day", "finkclass", "tnsclass"} & set(night.schema.names)


def test_batches_do_not_change_the_content():
    batches = list(generate_night(NIGHT, 2300, SEED, with_cutouts=False, batch_size=700))
    assert [b.num_rows for b in batches] == [700, 700, 700, 200]
    big = pa.Table.from_batches(list(generate_night(NIGHT, 2300, SEED, with_cutouts=False, batch_size=20_000)))
    assert _same_content(pa.Table.from_batches(batches), big)


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _same_content(a: pa.Table, b: pa.Table) -> bool:
    """Equal values, NaN included (Table.equals treats NaN != NaN), whatever the chunking."""
    return _ipc_bytes(a.combine_chunks()) == _ipc_bytes(b.combine_chunks())


def test_same_seed_same_bytes_other_seed_other_alerts(night, night_cutouts):
    assert _ipc_bytes(_table(with_cutouts=False)) == _ipc_bytes(night)
    assert _ipc_bytes(_table(n=600, with_cutouts=True, batch_size=250)) == _ipc_bytes(night_cutouts)
    other = _table(seed=SEED + 1, with_cutouts=False)
    assert other.column("candid").to_pylist() != night.column("candid").to_pylist()
    assert other.column("objectId").to_pylist() != night.column("objectId").to_pylist()
    assert _ipc_bytes(other) != _ipc_bytes(night)


def test_same_seed_same_bytes_in_another_process():
    """No draw may depend on Python's per-process hash seed (set iteration order): a seed
    gives the same alerts in every process, as the archive's reproducibility promises. One
    process per hash seed digests every survey's night."""
    import subprocess
    import sys

    code = (
        "import datetime as dt, hashlib, pyarrow as pa\n"
        "from fink_pipeline.surveys import get_survey\n"
        "for survey in ('ztf', 'lsst', 'elasticc'):\n"
        "    digest = hashlib.sha256()\n"
        "    for batch in get_survey(survey).generate_night(dt.date(2025, 11, 1), 300, 5, False):\n"
        "        sink = pa.BufferOutputStream()\n"
        "        with pa.ipc.new_stream(sink, batch.schema) as writer:\n"
        "            writer.write_batch(batch)\n"
        "        digest.update(sink.getvalue().to_pybytes())\n"
        "    print(survey, digest.hexdigest())\n"
    )
    digests = {seed: subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                    env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split("\n")
               for seed in ("0", "1", "2")}
    for survey in ("ztf", "lsst", "elasticc"):
        by_seed = {seed: next(line for line in lines if line.startswith(f"{survey} "))
                   for seed, lines in digests.items()}
        assert len(set(by_seed.values())) == 1, by_seed


def test_cutouts_change_only_the_cutout_columns(night_cutouts):
    light = _table(n=600, with_cutouts=False)
    assert _same_content(light.drop_columns(list(CUTOUT_COLUMNS)), night_cutouts.drop_columns(list(CUTOUT_COLUMNS)))
    for name in CUTOUT_COLUMNS:
        column = light.column(name).combine_chunks()
        assert column.null_count == 0  # struct present ...
        assert column.field("fileName").null_count == len(light)  # ... with null fields
        assert column.field("stampData").null_count == len(light)


def test_argument_validation():
    with pytest.raises(ValueError, match="n_alerts"):
        generate_night(NIGHT, -1, 0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_night(NIGHT, 10, 0, batch_size=0)
    with pytest.raises(TypeError):
        generate_night("2024-04-10", 10, 0)
    assert list(generate_night(NIGHT, 0, 0)) == []


# --------------------------------------------------------------------------------------------
# Identifiers and time
# --------------------------------------------------------------------------------------------


def test_candid_unique_across_nights_and_ids_like_ztf():
    nights = [_table(night=NIGHT + dt.timedelta(days=i), n=3000, with_cutouts=False) for i in range(3)]
    candids = np.concatenate([t.column("candid").to_numpy() for t in nights])
    assert len(np.unique(candids)) == len(candids)
    for t in nights:
        cand = t.column("candidate").combine_chunks()
        candid = t.column("candid").to_numpy()
        assert np.array_equal(candid, cand.field("candid").to_numpy())
        pid = cand.field("pid").to_numpy()
        nid = cand.field("nid").to_numpy()
        assert np.array_equal(candid // 10**6, pid)  # candid = pid * 10^6 + suffix
        assert np.array_equal(pid // 10**9, nid)  # pid = nid | fraction of day | rcid | 15
        assert np.array_equal((pid // 100) % 100, cand.field("rcid").to_numpy())
        assert np.all(pid % 100 == 15)
        assert 18 <= len(str(candid.max())) <= 19
    ids = pa.concat_arrays([t.column("objectId").combine_chunks() for t in nights]).to_pylist()
    assert all(re.fullmatch(r"ZTF\d{2}[a-z]{7}", i) for i in ids)
    per_night = [Counter(t.column("objectId").to_pylist()) for t in nights]
    assert all(max(c.values()) >= 2 for c in per_night)  # several alerts for some objects
    assert len(set(per_night[0]) & set(per_night[1])) > 0  # known objects come back


def test_night_and_time_consistency(night):
    jd = _cand(night, "jd")
    utc = pd.to_datetime((jd - JD_UNIX) * 86400.0, unit="s")
    assert set(utc.date) == {NIGHT}
    hours = utc.hour + utc.minute / 60
    assert hours.min() >= 2.0 and hours.max() <= 13.5
    assert np.all(_cand(night, "nid") == int(np.floor(jd[0] - 2457754.5)))
    assert np.array_equal(_cand(night, "jdendhist"), jd)
    ts = night.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.max(np.abs(ts - (jd - JD_UNIX) * 86400e6)) < 1.0  # microseconds
    ingest = night.column("brokerIngestTimestamp").cast(pa.int64()).to_numpy()
    start = night.column("brokerStartProcessTimestamp").cast(pa.int64()).to_numpy()
    end = night.column("brokerEndProcessTimestamp").cast(pa.int64()).to_numpy()
    assert np.all(ts < ingest) and np.all(ingest < start) and np.all(start < end)
    assert np.median(ingest - ts) / 60e6 < 180  # broker a little later (minutes, not days)
    assert str(night.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    # positions match the pixel grid: same (field, rcid) -> nearby coordinates
    assert np.all((_cand(night, "xpos") > 0) & (_cand(night, "xpos") < 3072))
    assert np.all((_cand(night, "dec") > -32) & (_cand(night, "dec") < 90))


# --------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------


def test_every_class_is_planted_with_realistic_fractions(night):
    labels = reference_finkclass(night)
    counts = labels.value_counts()
    for name in FINK_LABELS + SIMBAD_LABELS:
        assert counts.get(name, 0) >= N_NIGHT // BLOCK_SIZE, f"{name}: {counts.get(name, 0)}"
    frac = counts / len(labels)
    assert 0.50 <= frac["Unknown"] <= 0.62
    assert 0.09 <= frac["Solar System MPC"] <= 0.13
    assert 0.05 <= frac["V*"] <= 0.08
    assert frac["SN candidate"] < 0.01
    assert len(counts) >= 45  # many SIMBAD labels
    # what the flags depend on is consistent with the label
    roid = night.column("roid").to_numpy()
    assert np.all(roid[(labels == "Solar System MPC").to_numpy()] == 3)
    ss = night.column("candidate").combine_chunks().field("ssnamenr").to_numpy(zero_copy_only=False)
    assert np.all(ss[roid == 3] != "null") and np.all(ss[roid != 3] == "null")


def test_single_block_and_small_nights_still_classify():
    small = _table(n=1000, seed=3, with_cutouts=False)
    counts = reference_finkclass(small).value_counts()
    assert all(counts.get(name, 0) >= 1 for name in FINK_LABELS)
    tiny = _table(n=37, seed=3, with_cutouts=False)
    assert tiny.num_rows == 37


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


def test_history_lengths_and_consistency(night):
    lengths = pc.list_value_length(night.column("prv_candidates")).to_numpy(zero_copy_only=False)
    lengths = np.nan_to_num(lengths.astype(float)).astype(int)
    assert 10 <= np.median(lengths) <= 25  # real packets: median 19
    assert lengths.max() >= 40 and np.mean(lengths > 40) < 0.2  # heavy tail (real max 92)
    assert np.mean(lengths == 0) < 0.05
    prv = pc.list_flatten(night.column("prv_candidates")).combine_chunks()
    owner = np.repeat(np.arange(night.num_rows), lengths)
    jd = _cand(night, "jd")
    prv_jd = prv.field("jd").to_numpy()
    assert np.all(prv_jd < jd[owner]) and np.all(prv_jd > jd[owner] - 30.01)
    same_owner = owner[1:] == owner[:-1]
    assert np.all(np.diff(prv_jd)[same_owner] >= 0)  # time-ordered
    det = prv.field("candid").is_valid().to_numpy(zero_copy_only=False)
    assert 0.15 < det.mean() < 0.5  # mix of detections and upper limits (real: 31 %)
    upper = ~det
    for name in ("magpsf", "sigmapsf", "ra", "isdiffpos", "ssnamenr"):
        assert np.all(prv.field(name).is_null().to_numpy(zero_copy_only=False)[upper])
    for name in ("jd", "fid", "pid", "diffmaglim", "pdiffimfilename", "field", "rcid"):
        assert prv.field(name).null_count == 0
    assert np.all(prv.field("magpsf").is_valid().to_numpy(zero_copy_only=False)[det])
    n_det = np.bincount(owner[det], minlength=night.num_rows)
    ndethist = _cand(night, "ndethist")
    assert np.all(ndethist >= 1 + n_det)
    assert np.array_equal(night.column("nalerthist").to_numpy(), 1 + n_det)
    first_det = np.full(night.num_rows, np.inf)
    np.minimum.at(first_det, owner[det], prv_jd[det])
    jdstarthist = _cand(night, "jdstarthist")
    assert np.all(jdstarthist <= np.minimum(first_det, jd) + 1e-6)
    new = ndethist == 1
    assert np.all(jdstarthist[new] == jd[new])
    assert 0.2 < new.mean() < 0.5  # real packets: 39 % first detections


# --------------------------------------------------------------------------------------------
# Cutouts and livestream fields
# --------------------------------------------------------------------------------------------


def test_cutouts_are_realistic_gzipped_fits(night_cutouts, shared_data_optional):
    candid = night_cutouts.column("candid").to_numpy()
    pid = _cand(night_cutouts, "pid")
    suffix = {"cutoutScience": "_pid{p}_targ_sci.fits.gz", "cutoutTemplate": "_ref.fits.gz",
              "cutoutDifference": "_pid{p}_targ_scimref.fits.gz"}  # fmt: skip
    lo, hi = shared_data_optional or REAL_STAMP_RANGE
    for name in CUTOUT_COLUMNS:
        column = night_cutouts.column(name).combine_chunks()
        names = column.field("fileName").to_pylist()
        assert names[0] == f"candid{candid[0]}" + suffix[name].format(p=pid[0])
        stamps = column.field("stampData").to_pylist()
        sizes = np.array([len(s) for s in stamps])
        assert np.all((sizes >= lo) & (sizes <= hi)), (name, sizes.min(), sizes.max())
        assert len(set(stamps)) == len(stamps)  # no two stamps alike
        fits = gzip.decompress(stamps[0])
        assert len(fits) % 2880 == 0 and fits.startswith(b"SIMPLE  =                    T")
        assert b"NAXIS1  =                   63" in fits[:2880]
        pixels = np.frombuffer(fits[2880 : 2880 + 63 * 63 * 4], dtype=">f4")
        assert np.all(np.isfinite(pixels))


@pytest.fixture(scope="module")
def shared_data_optional():
    """(min, max) of the real ZTF stamp sizes when ../shared/data is there, else None."""
    from fink_pipeline_tests.conftest import SHARED_DATA

    folder = SHARED_DATA / "ztf" / "alerts"
    if not folder.exists():
        return None
    import fastavro

    sizes = []
    for path in sorted(folder.rglob("*.avro")):
        with open(path, "rb") as fh:
            for record in fastavro.reader(fh):
                sizes += [len(record[c]["stampData"]) for c in CUTOUT_COLUMNS]
    return (min(sizes) * 0.9, max(sizes) * 1.1)


def test_fields_read_by_the_livestream_filters(night):
    tracklet = night.column("tracklet").to_pandas()
    ids = tracklet.dropna()
    assert len(ids) > 0 and ids.str.fullmatch(r"TRCK_\d{8}_\d{6}_\d{2,}").all()
    assert ids.value_counts().min() >= 5  # Fink links at least 5 points per tracklet
    jd = pd.Series(_cand(night, "jd"))[ids.index]
    stamp = pd.to_datetime((jd - JD_UNIX) * 86400.0, unit="s").dt.strftime("%Y%m%d_%H%M%S")
    assert (ids.str[5:20] == stamp.values).all()  # id = exposure time
    mangrove = night.column("mangrove").to_pylist()
    assert all([k for k, _ in m] == ["HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist"] for m in mangrove)
    assert sum(dict(m)["HyperLEDA_name"] != "None" for m in mangrove) > 10
    blazar = night.column("blazar_stats").to_pylist()
    assert all(sorted(k for k, _ in b) == ["m0", "m1", "m2"] for b in blazar)
    cds = night.column("cdsxmatch").to_pandas()
    is_blazar = cds.isin(["Blazar", "BLLac", "Blazar_Candidate", "BLLac_Candidate"])
    assert all(dict(blazar[i])["m0"] != -1.0 for i in np.flatnonzero(is_blazar))
    assert (night.column("x4lac").to_pandas()[is_blazar] != "Unknown").any()
    spicy = night.column("spicy_id").to_numpy()
    assert (spicy != -1).sum() > 0 and np.all(night.column("spicy_class").to_pandas()[spicy == -1] == "Unknown")
    dr3 = night.column("DR3Name").to_pandas()
    assert dr3.str.fullmatch(r"Gaia DR3 \d+|nan").all() and (dr3 != "nan").mean() > 0.3
    assert (night.column("tns").to_pandas() != "").sum() > 0
    for band in ("lc_features_g", "lc_features_r"):
        column = night.column(band).combine_chunks()
        assert column.null_count == 0
        mean = column.field("mean").to_numpy(zero_copy_only=False)
        assert np.mean(np.isfinite(np.nan_to_num(mean.astype(float), nan=np.inf))) > 0.6
    assert night.column("anomaly_score").null_count < 0.4 * night.num_rows
    vra = (cds == "Unknown") & (night.column("roid").to_numpy() != 3) & (_cand(night, "magpsf") > 19.5)
    assert (vra & (_cand(night, "drb") > 0.5)).sum() > 0


# --------------------------------------------------------------------------------------------
# Archive layout and writer
# --------------------------------------------------------------------------------------------


def test_layout_paths_and_parse_night():
    night = dt.date(2025, 6, 2)
    assert night_dir("/a/b/", "ztf", night) == "/a/b/ztf/science/year=2025/month=06/day=02"
    assert night_dir("file:///a", "ztf", night) == "file:///a/ztf/science/year=2025/month=06/day=02"
    assert science_root("s3://bucket/x", "lsst") == "s3://bucket/x/lsst/science"
    assert parse_night("2025-06-02") == night == parse_night("20250602") == parse_night(" 2025-06-02 ")
    with pytest.raises(ValueError, match="'2025-13-01'"):
        parse_night("2025-13-01")
    with pytest.raises(ValueError, match="'yesterday'.*YYYY-MM-DD or YYYYMMDD"):
        parse_night("yesterday")


def test_list_nights_reads_the_hive_folders(tmp_path):
    def touch(rel):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    touch("ztf/science/year=2024/month=03/day=01/part-00000.parquet")
    touch("ztf/science/year=2025/month=1/day=14/part-00000.parquet")  # unpadded, as upstream
    touch("ztf/science/year=2024/month=03/day=02/_SUCCESS")  # no data file
    touch("ztf/science/_staging/2024-03-05-abc/part-00000.parquet")
    touch("ztf/science/year=2024/month=13/day=01/part-00000.parquet")  # not a date
    expected = [dt.date(2024, 3, 1), dt.date(2025, 1, 14)]
    assert list_nights(str(tmp_path), "ztf") == expected
    assert list_nights(f"file://{tmp_path}", "ztf") == expected
    assert list_nights(str(tmp_path / "missing"), "ztf") == []


def test_generate_archive_layout_counts_and_hive_reading(tmp_path):
    survey = get_survey("ztf")
    seen = []
    report = generate_archive(survey, str(tmp_path), dt.date(2024, 3, 31), 2, 1500, seed=5, with_cutouts=False,
                              progress=seen.append)  # fmt: skip
    nights = [dt.date(2024, 3, 31), dt.date(2024, 4, 1)]
    assert [n.night for n in report.nights] == nights and report.total_alerts == 3000 == sum(seen)
    for n in report.nights:
        folder = Path(n.path)
        assert folder == tmp_path / "ztf" / "science" / f"year={n.night.year}" / f"month={n.night.month:02d}" / f"day={n.night.day:02d}"
        files = sorted(os.listdir(folder))
        assert files == ["part-00000.parquet"] and n.files == 1
        assert n.bytes == (folder / files[0]).stat().st_size
        schema = pq.read_schema(folder / files[0])
        assert schema.remove_metadata().equals(ARCHIVE_SCHEMA)  # no year/month/day inside
        meta = pq.read_metadata(folder / files[0])
        assert meta.num_rows == 1500 and meta.row_group(0).column(0).compression == "ZSTD"
    assert list_nights(str(tmp_path), "ztf") == nights
    assert not (tmp_path / "ztf" / "science" / "_staging").exists() or not os.listdir(tmp_path / "ztf" / "science" / "_staging")
    dataset = ds.dataset(science_root(str(tmp_path), "ztf"), format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["candid", "year", "month", "day"])
    assert table.num_rows == 3000
    assert sorted(set(zip(*(table.column(c).to_pylist() for c in ("year", "month", "day"))))) == [(2024, 3, 31), (2024, 4, 1)]
    # the same night through a file:// root
    again = generate_archive(survey, f"file://{tmp_path}", dt.date(2024, 4, 1), 1, 1500, seed=5, with_cutouts=False)
    assert again.nights[0].path.startswith("file://") and again.total_alerts == 1500


def test_regeneration_replaces_the_night_idempotently(tmp_path):
    survey = get_survey("ztf")
    night = dt.date(2024, 3, 1)
    folder = Path(night_dir(str(tmp_path), "ztf", night))
    generate_archive(survey, str(tmp_path), night, 1, 1200, seed=2, with_cutouts=False)
    first = (folder / "part-00000.parquet").read_bytes()
    generate_archive(survey, str(tmp_path), night, 1, 1200, seed=2, with_cutouts=False)
    assert (folder / "part-00000.parquet").read_bytes() == first  # identical bytes
    assert os.listdir(folder) == ["part-00000.parquet"]
    generate_archive(survey, str(tmp_path), night, 1, 700, seed=2, with_cutouts=False)
    assert pq.read_metadata(folder / "part-00000.parquet").num_rows == 700  # replaced, not appended


def test_large_nights_roll_over_to_new_files(tmp_path):
    report = generate_archive(get_survey("ztf"), str(tmp_path), dt.date(2024, 3, 1), 1, 1000, seed=1,
                              with_cutouts=True, rows_per_group=200, max_file_bytes=12 * 1024 * 1024)  # fmt: skip
    night = report.nights[0]
    files = sorted(Path(night.path).iterdir())
    assert night.files == len(files) >= 3
    assert all(f.stat().st_size <= 12 * 1024 * 1024 for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 1000
    assert night.bytes / 1000 > 35_000  # full alerts weigh ~40 kB with their cutouts


def _failing_survey(after_rows: int):
    survey = get_survey("ztf")

    def broken(night, n_alerts, seed, with_cutouts=True, batch_size=20_000):
        rows = 0
        for batch in survey.generate_night(night, n_alerts, seed, with_cutouts=with_cutouts, batch_size=200):
            yield batch
            rows += batch.num_rows
            if rows >= after_rows:
                raise RuntimeError("simulated crash")

    return dataclasses.replace(survey, generate_night=broken)


def test_a_crash_never_leaves_a_visible_partial_night(tmp_path):
    night = dt.date(2024, 3, 1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_archive(_failing_survey(400), str(tmp_path), night, 1, 1000, seed=1, with_cutouts=False)
    assert list_nights(str(tmp_path), "ztf") == []
    assert not Path(night_dir(str(tmp_path), "ztf", night)).exists()
    staging = tmp_path / "ztf" / "science" / "_staging"
    assert not staging.exists() or os.listdir(staging) == []
    # a failing regeneration keeps the previous complete version
    generate_archive(get_survey("ztf"), str(tmp_path), night, 1, 900, seed=1, with_cutouts=False)
    before = (Path(night_dir(str(tmp_path), "ztf", night)) / "part-00000.parquet").read_bytes()
    with pytest.raises(RuntimeError):
        generate_archive(_failing_survey(400), str(tmp_path), night, 1, 1000, seed=1, with_cutouts=False)
    assert (Path(night_dir(str(tmp_path), "ztf", night)) / "part-00000.parquet").read_bytes() == before


def test_a_killed_writer_leftover_is_invisible_then_cleaned(tmp_path):
    night = dt.date(2024, 3, 1)
    leftover = tmp_path / "ztf" / "science" / "_staging" / f"{night.isoformat()}-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "part-00000.parquet").write_bytes(b"PAR1 truncated")  # as a kill -9 would leave it
    assert list_nights(str(tmp_path), "ztf") == []
    generate_archive(get_survey("ztf"), str(tmp_path), dt.date(2024, 3, 2), 1, 300, seed=1, with_cutouts=False)
    dataset = ds.dataset(science_root(str(tmp_path), "ztf"), format="parquet", partitioning="hive")
    assert dataset.count_rows() == 300  # the staging folder is skipped by readers
    generate_archive(get_survey("ztf"), str(tmp_path), night, 1, 300, seed=1, with_cutouts=False)
    assert not leftover.exists()
    assert list_nights(str(tmp_path), "ztf") == [night, dt.date(2024, 3, 2)]


@pytest.mark.spark
def test_a_generated_lsst_night_exercises_every_rubin_filter_and_block(spark, tmp_path):
    """Each of Fink's Rubin live-stream filters and blocks (fink-filters 7.45, replayed by
    surveys/lsst/selections) selects at least one alert of a generated 10,000-alert night, and
    not all of them. Cutouts included: faint_trails measures the science stamps."""
    from pyspark.sql import functions as F

    from fink_pipeline.surveys.lsst.selections import RUBIN_BLOCKS, RUBIN_FILTERS

    night, n_alerts = dt.date(2026, 3, 6), 10_000
    generate_archive(get_survey("lsst"), str(tmp_path), night, 1, n_alerts, seed=0, with_cutouts=True)
    df = spark.read.parquet(night_dir(str(tmp_path), "lsst", night))
    selections = {**RUBIN_FILTERS, **RUBIN_BLOCKS}
    assert len(RUBIN_FILTERS) == 14 and len(RUBIN_BLOCKS) == 16
    # Rubin stamps weigh ~35 kB: the default 4,096-row reader batches of cutoutScience overflow
    # the test session's 2 GB heap
    batch_size = spark.conf.get("spark.sql.parquet.columnarReaderBatchSize")
    spark.conf.set("spark.sql.parquet.columnarReaderBatchSize", "256")
    try:
        row = df.select(F.count(F.lit(1)).alias("alerts"),
                        *[F.sum(s.column().cast("int")).alias(name) for name, s in selections.items()]).first()  # fmt: skip
    finally:
        spark.conf.set("spark.sql.parquet.columnarReaderBatchSize", batch_size)
    counts = {name: row[name] for name in selections}
    assert row["alerts"] == n_alerts
    assert all(0 < count < n_alerts for count in counts.values()), counts


def test_survey_wiring():
    survey = get_survey("ztf")
    assert survey.generate_night is generate_night
    assert survey.archive_schema is ARCHIVE_SCHEMA
    assert survey.time_column == "candidate.jd" and survey.time_scale == "jd"
    assert survey.night_of(float(_cand(_table(n=5, with_cutouts=False), "jd")[0])) == NIGHT
