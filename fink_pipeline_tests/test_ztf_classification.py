"""finkclass / tnsclass and the ZTF livestream filter replay, Spark vs Arrow vs pandas.

Real samples of ../shared/data and what they allow (checked in `test_real_samples_inventory`):

* `ztf/fink/ftransfer_avro/part-3-305711.avro` (31 alerts) is the only sample that stores
  Fink's per-alert `finkclass` (and `tnsclass`), with all 13 inputs: recomputed by the Spark
  column and by `finkclass_arrow`, every alert must match.
* `ztf/fink/ftransfer_parquet/part-0-0-435829.parquet` (72 rows) has no `finkclass` column;
  its `cdsxmatch` column was replaced upstream by a curated, prefixed *object-level* label
  ("(SIMBAD) X", "(TNS) X" or a bare Fink label). Only the "(SIMBAD) X" rows can be checked
  (cdsxmatch restored to X, finkclass must be X). The bare Fink labels ("Kilonova candidate",
  ...) do not describe these particular alerts, and the "(TNS) X" rows hide the real
  cdsxmatch, so they are not checked.
* Samples with every input but no stored finkclass (Spark, Arrow and the pandas
  transliteration of Fink's code must agree on them): science_parquet/fink-utils_2025 (3 files,
  1 row each), fink-utils_online (11), science_avro_snappy (54).
* Samples lacking inputs (Fink's job would fail on them too): fink-broker_2019 and
  fink-broker_20200101/science (no `tracklet`), fink-broker_tracklet (no `rf_snia_vs_nonia`,
  `rf_kn_vs_nonkn`, `tracklet`), fink-broker_20200101/raw (raw alerts, no Fink values),
  distribution_avro (only `cdsxmatch` among the inputs). fink-science_datatest (57) has all
  13 names but stores `mulens` as a struct of the old LIA outputs (as does fink-broker_tracklet),
  which today's rule (`mulens > 0`) cannot read.

Nothing here writes to ../shared/data.
"""

from __future__ import annotations

import math
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.surveys.ztf import classes as ZC
from fink_pipeline.surveys.ztf import classification as C
from fink_pipeline.surveys.ztf import filters as FL
from fink_pipeline.surveys.ztf import tns as T
from fink_pipeline.surveys.ztf.schema import ARCHIVE_SCHEMA

FTRANSFER_AVRO = "ztf/fink/ftransfer_avro/part-3-305711.avro"
FTRANSFER_PARQUET = "ztf/fink/ftransfer_parquet/part-0-0-435829.parquet"
SCIENCE = "ztf/fink/science_parquet"
COMPLETE_SAMPLES = {
    f"{SCIENCE}/fink-utils_2025": 3,
    f"{SCIENCE}/fink-utils_online": 11,
    "ztf/fink/science_avro_snappy": 54,
}
# old Fink versions stored `mulens` as a struct of LIA outputs (today's rule needs a double)
MULENS_STRUCT_SAMPLES = {f"{SCIENCE}/fink-science_datatest": 57, f"{SCIENCE}/fink-broker_tracklet": 16}
INCOMPLETE_SAMPLES = {
    f"{SCIENCE}/fink-broker_2019": {"tracklet"},
    f"{SCIENCE}/fink-broker_20200101/science": {"tracklet"},
    f"{SCIENCE}/fink-broker_tracklet": {"rf_snia_vs_nonia", "rf_kn_vs_nonkn", "tracklet"},
    f"{SCIENCE}/fink-broker_20200101/raw": {
        "cdsxmatch", "roid", "mulens", "snn_snia_vs_nonia", "snn_sn_vs_all",
        "rf_snia_vs_nonia", "rf_kn_vs_nonkn", "tracklet",
    },
    "ztf/fink/distribution_avro": {
        "roid", "mulens", "snn_snia_vs_nonia", "snn_sn_vs_all", "rf_snia_vs_nonia",
        "rf_kn_vs_nonkn", "tracklet",
    },
}  # fmt: skip

INPUT_PATHS = C.FINKCLASS_INPUT_COLUMNS + ("candidate.ra", "candidate.dec", "objectId", "candid")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def prune_schema(paths, schema: pa.Schema = ARCHIVE_SCHEMA) -> pa.Schema:
    """ARCHIVE_SCHEMA reduced to dotted `paths` (struct and list-of-struct levels kept)."""
    tree: dict = {}
    for path in paths:
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})

    def prune(dtype: pa.DataType, sub: dict) -> pa.DataType:
        if not sub:
            return dtype
        if pa.types.is_list(dtype):
            return pa.list_(prune(dtype.value_type, sub))
        return pa.struct([pa.field(f.name, prune(f.type, sub[f.name])) for f in dtype if f.name in sub])

    return pa.schema([pa.field(f.name, prune(f.type, tree[f.name])) for f in schema if f.name in tree])


def inputs_table(records: list[dict], extra: tuple[str, ...] = ()) -> pa.Table:
    """Decoded alert records -> Arrow table of the classification inputs, typed as the archive."""
    schema = prune_schema(INPUT_PATHS)
    for name in extra:
        schema = schema.append(pa.field(name, pa.string()))
    rows = []
    for rec in records:
        row = {name: rec.get(name) for name in schema.names if name != "candidate"}
        row["candidate"] = {f.name: rec["candidate"].get(f.name) for f in schema.field("candidate").type}
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def read_avro(path: Path) -> list[dict]:
    records = []
    for file in sorted(path.glob("*.avro")) if path.is_dir() else [path]:
        with open(file, "rb") as fh:
            records.extend(fastavro.reader(fh))
    return records


def read_sample(shared: Path, rel: str) -> pa.Table:
    """A real sample (Parquet folder/file or Avro) as a table of the classification inputs."""
    path = shared / rel
    if rel.endswith(".avro") or any(path.glob("*.avro")):
        return inputs_table(read_avro(path))
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    tables = [pq.read_table(f) for f in files]
    records = [r for t in tables for r in t.select(sorted({p.split(".")[0] for p in INPUT_PATHS})).to_pylist()]
    return inputs_table(records)


def sample_columns(shared: Path, rel: str) -> set[str]:
    """Dotted input paths present in a sample (root names, plus candidate.<field>)."""
    path = shared / rel
    avro = sorted(path.glob("*.avro")) if path.is_dir() else []
    if avro:
        names = set()
        for file in avro:
            with open(file, "rb") as fh:
                for f in fastavro.reader(fh).writer_schema["fields"]:
                    names.add(f["name"])
                    kinds = f["type"] if isinstance(f["type"], list) else [f["type"]]
                    for kind in kinds:
                        if isinstance(kind, dict) and kind.get("type") == "record":
                            names |= {f"{f['name']}.{sub['name']}" for sub in kind["fields"]}
        return names
    schema = pq.read_schema(sorted(path.rglob("*.parquet"))[0])
    names = set(schema.names)
    if "candidate" in names:
        names |= {f"candidate.{f.name}" for f in schema.field("candidate").type}
    return names


def spark_labels(spark, table: pa.Table, column) -> list:
    """Evaluate a Spark column on an Arrow table; values in the table's row order."""
    indexed = table.append_column("_row", pa.array(np.arange(table.num_rows), pa.int64()))
    rows = spark.createDataFrame(indexed).select("_row", column.alias("out")).orderBy("_row").collect()
    return [r["out"] for r in rows]


# --------------------------------------------------------------------------------------------
# Independent pandas transliteration of Fink's code (the pandas UDF inputs: ints with nulls
# arrive as float64/NaN, strings as None). Where Fink calls astype(int) on a column that may
# hold NaN (and would raise), we compare as float, which is the semantics our code adopts.
# --------------------------------------------------------------------------------------------


def to_pandas_inputs(table: pa.Table, paths) -> pd.DataFrame:
    return pd.DataFrame(
        {p.split(".")[-1]: C.arrow_field(table, p).to_pandas() for p in paths}
    )


def fink_reference_flags(p: pd.DataFrame, tracklet=None) -> dict[str, pd.Series]:
    eg = list(C.EXTRAGALACTIC_HOSTS)
    snn1 = p.snn_snia_vs_nonia.astype(float) > 0.5
    snn2 = p.snn_sn_vs_all.astype(float) > 0.5
    drb = p.drb.astype(float) > 0.5
    classtar = p.classtar.astype(float) > 0.4
    age = p.jd.astype(float) - p.jdstarthist.astype(float)
    trk = p.tracklet if tracklet is None else tracklet
    simbad = ~p.cdsxmatch.isin(["Unknown", "Transient", "Fail", "Fail 504"])
    simbad[p.cdsxmatch.apply(lambda x: x is None or x.startswith("Fail"))] = False
    simbad[p.cdsxmatch.apply(lambda x: x is None or x.startswith("Galaxy"))] = False
    return {
        "tracklet": trk.apply(lambda x: str(x).startswith("TRCK_")),
        "simbad": simbad,
        "sn_early": (snn1 | snn2) & p.cdsxmatch.isin(eg) & drb & classtar
        & (p.ndethist.astype(float) <= 20) & (p.rf_snia_vs_nonia.astype(float) > 0.5),
        "sn": (snn1 | snn2) & p.cdsxmatch.isin(eg) & (age <= 90) & drb & classtar
        & (p.ndethist.astype(float) > 1) & (p.roid.astype(float) != 3),
        "mulens": p.mulens > 0.0,
        "kn": (p.rf_kn_vs_nonkn.astype(float) > 0.5) & drb & classtar & (age < 5)
        & (p.roid != 3) & (p.ndethist.astype(float) < 20) & p.cdsxmatch.isin(eg),
        "roid_3": p.roid.astype(float) == 3,
        "roid_2": p.roid.astype(float) == 2,
    }  # fmt: skip


def fink_reference_finkclass(p: pd.DataFrame, tracklet=None) -> np.ndarray:
    f = fink_reference_flags(p, tracklet)
    classification = pd.Series(["Unknown"] * len(p))
    ambiguity = pd.Series([0] * len(p))
    classification = classification.mask(f["mulens"].to_numpy(), "Microlensing candidate")
    classification = classification.mask(f["sn"].to_numpy(), "SN candidate")
    classification = classification.mask(f["sn_early"].to_numpy(), "Early SN Ia candidate")
    classification = classification.mask(f["kn"].to_numpy(), "Kilonova candidate")
    classification = classification.mask(f["roid_2"].to_numpy(), "Solar System candidate")
    classification = classification.mask(f["tracklet"].to_numpy(), "Tracklet")
    classification = classification.mask(f["roid_3"].to_numpy(), "Solar System MPC")
    for key in ("mulens", "sn", "roid_2", "roid_3"):
        ambiguity[f[key].to_numpy()] += 1
    classification = classification.mask((ambiguity > 1).to_numpy(), "Ambiguous")
    return np.where(f["simbad"], p.cdsxmatch, classification)


# --------------------------------------------------------------------------------------------
# Real samples
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ftransfer(shared_data) -> pa.Table:
    return inputs_table(read_avro(shared_data / FTRANSFER_AVRO), extra=("tns", "finkclass", "tnsclass"))


def test_ftransfer_avro_finkclass_arrow(ftransfer):
    stored = ftransfer.column("finkclass").to_pylist()
    assert len(stored) == 31
    assert C.finkclass_arrow(ftransfer).to_pylist() == stored
    # and the independent transliteration of Fink's code agrees
    pdf = to_pandas_inputs(ftransfer, C.FINKCLASS_INPUT_COLUMNS)
    assert list(fink_reference_finkclass(pdf)) == stored


def _catalog_from_alerts(table: pa.Table) -> pa.Table:
    """A raw TNS catalogue made of the sample's own TNS-labelled alerts (type unprefixed)."""
    cand = C.arrow_field
    tns = table.column("tns").to_pylist()
    keep = [i for i, t in enumerate(tns) if t]
    return pa.table(
        {
            "ra": pa.array([cand(table, "candidate.ra")[i].as_py() for i in keep]),
            "declination": pa.array([cand(table, "candidate.dec")[i].as_py() for i in keep]),
            "type": pa.array([tns[i] for i in keep]),
        }
    )


def test_ftransfer_avro_tnsclass_arrow(ftransfer):
    stored = ftransfer.column("tnsclass").to_pylist()
    # the stored fresh cross-match agrees with the `tns` label Fink stored at processing time
    assert stored == [f"(TNS) {t}" if t else "Unknown" for t in ftransfer.column("tns").to_pylist()]
    out = ZC.classify_arrow(ftransfer, _catalog_from_alerts(ftransfer))
    assert out["tnsclass"].to_pylist() == stored
    assert out["finkclass"].to_pylist() == ftransfer.column("finkclass").to_pylist()
    no_catalog = ZC.classify_arrow(ftransfer)["tnsclass"].to_pylist()
    assert no_catalog == ["Unknown"] * 31


@pytest.mark.spark
def test_ftransfer_avro_classify_spark(spark, ftransfer):
    """finkclass (Spark column) and tnsclass (Spark cross-match) reproduce the 31 stored values."""
    df = spark.createDataFrame(ftransfer.drop_columns(["finkclass", "tnsclass"]))
    out = ZC.classify(df, _catalog_from_alerts(ftransfer))
    assert out.columns == df.columns + ["finkclass", "tnsclass"]
    got = {r["objectId"]: (r["finkclass"], r["tnsclass"]) for r in out.collect()}
    want = dict(
        zip(
            ftransfer.column("objectId").to_pylist(),
            zip(ftransfer.column("finkclass").to_pylist(), ftransfer.column("tnsclass").to_pylist()),
        )
    )
    assert got == want and out.count() == 31


def test_ftransfer_parquet_simbad_rows(shared_data):
    """Only the "(SIMBAD) X" object labels of the hostless sample are checkable (see module doc)."""
    table = pq.read_table(shared_data / FTRANSFER_PARQUET)
    assert "finkclass" not in table.column_names
    labels = table.column("cdsxmatch").to_pylist()
    simbad = [i for i, label in enumerate(labels) if label.startswith("(SIMBAD) ")]
    restored = [labels[i].removeprefix("(SIMBAD) ") for i in simbad]
    sub = table.take(simbad)
    sub = sub.set_column(sub.schema.get_field_index("cdsxmatch"), "cdsxmatch", pa.array(restored))
    assert C.finkclass_arrow(sub).to_pylist() == restored
    assert len(simbad) == 27


def test_real_samples_inventory(shared_data):
    """Which real samples carry finkclass, and which lack classification inputs."""
    found = sorted(
        str(p.relative_to(shared_data))
        for p in (shared_data / "ztf").rglob("*")
        if p.suffix in {".avro", ".parquet"} and p.is_file() and "finkclass" in _names(p)
    )
    assert found == [FTRANSFER_AVRO]
    inputs = set(C.FINKCLASS_INPUT_COLUMNS)
    for rel in COMPLETE_SAMPLES:
        assert inputs <= sample_columns(shared_data, rel), rel
    for rel, missing in INCOMPLETE_SAMPLES.items():
        assert inputs - sample_columns(shared_data, rel) == missing, rel
    for rel, n_rows in MULENS_STRUCT_SAMPLES.items():
        table = pq.read_table(shared_data / rel)
        assert table.num_rows == n_rows and pa.types.is_struct(table.schema.field("mulens").type), rel


def _names(path: Path) -> set[str]:
    if path.suffix == ".avro":
        with open(path, "rb") as fh:
            return {f["name"] for f in fastavro.reader(fh).writer_schema["fields"]}
    return set(pq.read_schema(path).names)


@pytest.mark.spark
def test_real_samples_spark_matches_arrow(spark, shared_data):
    """Parquet samples are read by Spark itself (as the transfer job reads the archive)."""
    for rel, n_rows in COMPLETE_SAMPLES.items():
        table = read_sample(shared_data, rel)
        assert table.num_rows == n_rows, rel
        arrow = C.finkclass_arrow(table).to_pylist()
        pdf = to_pandas_inputs(table, C.FINKCLASS_INPUT_COLUMNS)
        assert list(fink_reference_finkclass(pdf)) == arrow, rel
        path = shared_data / rel
        df = spark.createDataFrame(table) if any(path.glob("*.avro")) else spark.read.parquet(str(path))
        got = sorted((r["candid"], r["f"]) for r in df.select("candid", C.finkclass_column().alias("f")).collect())
        assert got == sorted(zip(table.column("candid").to_pylist(), arrow)), rel


# --------------------------------------------------------------------------------------------
# finkclass truth table
# --------------------------------------------------------------------------------------------

F32_04 = float(np.float32(0.4))  # 0.4000000059604645: astype(float) > 0.4 is True
F32_BELOW_04 = float(np.nextafter(np.float32(0.4), np.float32(0)))

BASE = dict(  # a plain "SN candidate"
    cdsxmatch="Unknown", roid=0, mulens=0.0, snn_snia_vs_nonia=0.6, snn_sn_vs_all=0.1,
    rf_snia_vs_nonia=0.1, ndethist=5, drb=0.9, classtar=0.9, jd=2460010.0,
    jdstarthist=2460000.0, rf_kn_vs_nonkn=0.0, tracklet=None,
)  # fmt: skip
NOTHING = dict(BASE, snn_snia_vs_nonia=0.1)  # no flag at all
KN = dict(NOTHING, rf_kn_vs_nonkn=0.7, jd=2460002.0)
NAN = float("nan")

TRUTH_TABLE: list[tuple[str, dict, str]] = [
    ("sn", BASE, "SN candidate"),
    ("sn_via_snn2", dict(BASE, snn_snia_vs_nonia=0.1, snn_sn_vs_all=0.51), "SN candidate"),
    ("snn_at_threshold", dict(BASE, snn_snia_vs_nonia=0.5), "Unknown"),
    ("snn_null_other_high", dict(BASE, snn_snia_vs_nonia=None, snn_sn_vs_all=0.7), "SN candidate"),
    ("snn_both_null", dict(BASE, snn_snia_vs_nonia=None, snn_sn_vs_all=None), "Unknown"),
    ("snn_nan", dict(BASE, snn_snia_vs_nonia=NAN), "Unknown"),
    ("nothing", NOTHING, "Unknown"),
    ("all_null", {k: None for k in BASE}, "Unknown"),
    ("first_detection", dict(BASE, ndethist=1), "Unknown"),
    ("ndethist_null", dict(BASE, ndethist=None), "Unknown"),
    ("age_90", dict(BASE, jd=2460090.0), "SN candidate"),
    ("age_over_90", dict(BASE, jd=2460090.5), "Unknown"),
    ("jd_null", dict(BASE, jd=None), "Unknown"),
    ("drb_at_threshold", dict(BASE, drb=0.5), "Unknown"),
    ("drb_nan", dict(BASE, drb=NAN), "Unknown"),
    ("classtar_float32_0.4", dict(BASE, classtar=F32_04), "SN candidate"),
    ("classtar_below_0.4", dict(BASE, classtar=F32_BELOW_04), "Unknown"),
    ("early", dict(BASE, rf_snia_vs_nonia=0.6), "Early SN Ia candidate"),
    ("early_first_detection", dict(BASE, rf_snia_vs_nonia=0.6, ndethist=1), "Early SN Ia candidate"),
    ("early_ndethist_20", dict(BASE, rf_snia_vs_nonia=0.6, ndethist=20), "Early SN Ia candidate"),
    ("early_ndethist_21", dict(BASE, rf_snia_vs_nonia=0.6, ndethist=21), "SN candidate"),
    ("early_old_object", dict(BASE, rf_snia_vs_nonia=0.6, jd=2460200.0), "Early SN Ia candidate"),
    ("eg_galaxy", dict(BASE, cdsxmatch="Galaxy"), "SN candidate"),
    ("eg_transient", dict(BASE, cdsxmatch="Transient"), "SN candidate"),
    ("eg_fail_504", dict(BASE, cdsxmatch="Fail 504"), "SN candidate"),
    ("eg_liner_is_simbad", dict(BASE, cdsxmatch="LINER"), "LINER"),
    ("fail_503_neither", dict(BASE, cdsxmatch="Fail 503"), "Unknown"),
    ("galaxy_prefix_not_simbad", dict(BASE, cdsxmatch="GalaxyInPair"), "Unknown"),
    ("simbad_sn_overrides", dict(BASE, cdsxmatch="SN"), "SN"),
    ("simbad_star", dict(BASE, cdsxmatch="RRLyr"), "RRLyr"),
    ("cdsxmatch_null", dict(BASE, cdsxmatch=None), "Unknown"),
    ("mpc_blocks_sn", dict(BASE, roid=3), "Solar System MPC"),
    ("roid_null_is_not_mpc", dict(BASE, roid=None), "SN candidate"),
    ("sso_candidate", dict(NOTHING, roid=2), "Solar System candidate"),
    ("sn_and_sso_candidate", dict(BASE, roid=2), "Ambiguous"),
    ("microlensing", dict(NOTHING, mulens=0.1), "Microlensing candidate"),
    ("mulens_nan", dict(NOTHING, mulens=NAN), "Unknown"),
    ("mulens_and_sn", dict(BASE, mulens=0.1), "Ambiguous"),
    ("mulens_and_mpc", dict(NOTHING, mulens=0.1, roid=3), "Ambiguous"),
    ("simbad_beats_ambiguous", dict(NOTHING, mulens=0.1, roid=3, cdsxmatch="EB*"), "EB*"),
    ("kn", KN, "Kilonova candidate"),
    ("kn_age_5", dict(KN, jd=2460005.0), "Unknown"),
    ("kn_ndethist_20", dict(KN, ndethist=20), "Unknown"),
    ("kn_roid_null", dict(KN, roid=None), "Kilonova candidate"),
    ("kn_over_sn", dict(KN, snn_snia_vs_nonia=0.9), "Kilonova candidate"),
    ("kn_over_early", dict(KN, snn_snia_vs_nonia=0.9, rf_snia_vs_nonia=0.9), "Kilonova candidate"),
    ("kn_not_counted", dict(KN, mulens=0.2), "Kilonova candidate"),
    ("kn_star_host", dict(KN, cdsxmatch="Star"), "Star"),
    ("tracklet", dict(NOTHING, tracklet="TRCK_20210604_1"), "Tracklet"),
    ("tracklet_over_sso_candidate", dict(NOTHING, tracklet="TRCK_1", roid=2), "Tracklet"),
    ("mpc_over_tracklet", dict(NOTHING, tracklet="TRCK_1", roid=3), "Solar System MPC"),
    ("tracklet_not_counted", dict(BASE, tracklet="TRCK_1", mulens=0.3), "Ambiguous"),
    ("tracklet_with_sn", dict(BASE, tracklet="TRCK_1"), "Tracklet"),
    ("tracklet_empty", dict(NOTHING, tracklet=""), "Unknown"),
    ("tracklet_none_string", dict(NOTHING, tracklet="None"), "Unknown"),
    ("tracklet_lowercase", dict(NOTHING, tracklet="trck_1"), "Unknown"),
]


def truth_table() -> pa.Table:
    schema = prune_schema(C.FINKCLASS_INPUT_COLUMNS + ("objectId",))
    cand_fields = {f.name for f in schema.field("candidate").type}
    rows = []
    for name, values, _ in TRUTH_TABLE:
        row = {k: v for k, v in values.items() if k not in cand_fields}
        row["candidate"] = {k: v for k, v in values.items() if k in cand_fields}
        row["objectId"] = name
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def test_truth_table_arrow():
    table = truth_table()
    assert table.schema.field("candidate").type.field("classtar").type == pa.float32()
    got = C.finkclass_arrow(table).to_pylist()
    want = [label for _, _, label in TRUTH_TABLE]
    assert dict(zip(table.column("objectId").to_pylist(), got)) == dict(
        zip(table.column("objectId").to_pylist(), want)
    )
    pdf = to_pandas_inputs(table, C.FINKCLASS_INPUT_COLUMNS)
    assert list(fink_reference_finkclass(pdf)) == want


@pytest.mark.spark
def test_truth_table_spark(spark):
    table = truth_table()
    got = spark_labels(spark, table, C.finkclass_column())
    names = table.column("objectId").to_pylist()
    assert dict(zip(names, got)) == {name: label for name, _, label in TRUTH_TABLE}


def test_constants():
    assert len(C.EXTRAGALACTIC_HOSTS) == 34
    assert {"Unknown", "Fail 504", "SN*_Candidate", "LINER", "GravLens_Candidate"} <= C.EXTRAGALACTIC_HOSTS
    assert len(C.FINK_CLASS_LABELS) == 9
    assert len(C.FINKCLASS_INPUT_COLUMNS) == 13


def test_module_imports_without_pyspark():
    import subprocess
    import sys

    code = (
        "import sys; import fink_pipeline.surveys.ztf.classification, fink_pipeline.surveys.ztf.tns, "
        "fink_pipeline.surveys.ztf.classes, fink_pipeline.surveys.ztf.filters; assert 'pyspark' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Random table: Spark == Arrow == pandas transliteration
# --------------------------------------------------------------------------------------------

SIMBAD_POOL = [
    "Unknown", "Unknown", "Unknown", "Galaxy", "SN", "Candidate_SN*", "SN*_Candidate", "Fail",
    "Fail 504", "Fail 500", "Transient", "GalaxyFoo", "RRLyr", "QSO", "Seyfert_1", "LINER",
    "Blazar", "BLLac_Candidate", "Candidate_YSO", "YSO_Candidate", "TTau*_Candidate",
    "LensedImage", "BlackHole", "EB*", None,
]  # fmt: skip


def _maybe(rng, values, p_null=0.08, p_nan=0.0):
    out = []
    for v in values:
        u = rng.random()
        out.append(None if u < p_null else (NAN if u < p_null + p_nan else v))
    return out


def random_alerts(n: int, seed: int = 7) -> pa.Table:
    """Random alerts over the finkclass inputs plus the fields the filters read."""
    rng = np.random.default_rng(seed)
    pick = lambda pool, k=n: [pool[i] for i in rng.integers(0, len(pool), k)]  # noqa: E731
    score = lambda: _maybe(rng, pick([0.0, 0.2, 0.5, 0.5000001, 0.51, 0.9, 1.0]), p_nan=0.03)  # noqa: E731
    jd = 2460000.0 + rng.random(n) * 20
    age = np.array(pick([0.0, 0.1, 0.25, 4.9, 5.0, 5.1, 10.0, 30.0, 30.5, 89.9, 90.0, 90.1, 400.0]))
    ndethist = _maybe(rng, pick(list(range(0, 26))))
    roid = _maybe(rng, pick([0, 0, 0, 1, 2, 3]))
    drb = _maybe(rng, pick([0.1, 0.5, 0.51, 0.99]), p_nan=0.02)
    classtar = _maybe(rng, pick([0.2, F32_BELOW_04, F32_04, 0.41, 0.98]))
    magpsf = _maybe(rng, list(17.0 + 5.0 * rng.random(n)))
    scores = {k: score() for k in ("snn_snia_vs_nonia", "snn_sn_vs_all", "rf_snia_vs_nonia", "rf_kn_vs_nonkn")}
    mulens = _maybe(rng, pick([0.0, 0.0, 0.3]), p_nan=0.03)
    rows = []
    for i in range(n):
        n_prv = int(rng.integers(0, 9))
        slope = float(rng.choice([0.0, 0.05, -0.08]))
        noise = float(rng.choice([0.001, 0.02, 0.5]))
        prv_jd = jd[i] - np.sort(rng.random(n_prv) * 30)[::-1]
        prv = [
            {
                "jd": float(t),
                "magpsf": None if rng.random() < 0.1 else float(18 + slope * (t - jd[i]) + noise * rng.normal()),
                "fid": int(rng.choice([1, 2, 2, 2])),
            }
            for t in prv_jd
        ]
        rows.append(
            {
                "objectId": f"ZTF{i:06d}",
                "cdsxmatch": SIMBAD_POOL[int(rng.integers(0, len(SIMBAD_POOL)))],
                "roid": roid[i],
                "mulens": mulens[i],
                **{k: v[i] for k, v in scores.items()},
                "tracklet": [None, "", "None", "TRCK_20240101_000001", "trck"][int(rng.integers(0, 5))]
                if rng.random() < 0.3
                else None,
                "tns": [None, "", "", "SN Ia"][int(rng.integers(0, 4))],
                "spicy_class": [None, "Unknown", "Unknown", "ClassI", "FS"][int(rng.integers(0, 5))],
                "lc_features_r": None
                if rng.random() < 0.1
                else {"linear_fit_slope": [None, 0.01, 0.03, -0.05, 0.025][int(rng.integers(0, 5))]},
                "candidate": {
                    "jd": float(jd[i]) if rng.random() > 0.02 else None,
                    "jdstarthist": float(jd[i] - age[i]) if rng.random() > 0.02 else None,
                    "ndethist": ndethist[i],
                    "drb": drb[i],
                    "classtar": classtar[i],
                    "magpsf": magpsf[i],
                    "fid": int(rng.choice([1, 2, 2])),
                    "ra": float(rng.random() * 360),
                    "dec": float(rng.random() * 180 - 90),
                },
                "prv_candidates": None if n_prv == 0 and rng.random() < 0.5 else prv,
            }
        )
    paths = C.FINKCLASS_INPUT_COLUMNS + (
        "objectId", "tns", "spicy_class", "lc_features_r.linear_fit_slope", "candidate.magpsf",
        "candidate.fid", "candidate.ra", "candidate.dec",
        "prv_candidates.jd", "prv_candidates.magpsf", "prv_candidates.fid",
    )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=prune_schema(paths))


@pytest.fixture(scope="module")
def random_table() -> pa.Table:
    return random_alerts(5000)


def test_random_arrow_matches_pandas_reference(random_table):
    arrow = C.finkclass_arrow(random_table).to_pylist()
    pdf = to_pandas_inputs(random_table, C.FINKCLASS_INPUT_COLUMNS)
    assert list(fink_reference_finkclass(pdf)) == arrow
    # every rule fires somewhere, so the comparison is not vacuous
    labels = set(arrow)
    assert set(C.FINK_CLASS_LABELS) <= labels
    flags = C.finkclass_flags_arrow(random_table)
    ref = fink_reference_flags(pdf)
    for key, value in flags.items():
        assert np.array_equal(value, ref[key].to_numpy(dtype=bool)), key


@pytest.mark.spark
def test_random_spark_matches_arrow(spark, random_table):
    assert spark_labels(spark, random_table, C.finkclass_column()) == C.finkclass_arrow(random_table).to_pylist()


# --------------------------------------------------------------------------------------------
# tnsclass
# --------------------------------------------------------------------------------------------

ARCSEC = 1.0 / 3600.0


def tns_cases() -> tuple[pa.Table, pa.Table, list[str]]:
    """Alerts, raw catalogue and expected labels for the edge cases of the cross-match."""
    cat = [  # ra, dec, type
        (10.0, 20.0 + 1.0 * ARCSEC, "far-ish"),  # 0
        (10.0, 20.0 - 0.5 * ARCSEC, "nearest"),  # 1
        (50.0, 10.0 + 1.6 * ARCSEC, "beyond"),  # 2
        (60.0, -30.0 + 1.45 * ARCSEC, "inside"),  # 3
        (70.0 + 2.0**-12, 0.0, "tie-first"),  # 4: 0.88" east, exactly representable
        (70.0 - 2.0**-12, 0.0, "tie-second"),  # 5: 0.88" west, same distance
        (0.0 + 0.3 * ARCSEC, 0.0, "wrap-east"),  # 6
        (359.9999, 45.0, None),  # 7: no type -> dropped
        (180.0, 89.9999, "north"),  # 8
        (90.0, -89.99995, "south"),  # 9
        (120.0, 60.0, "(TNS) SN Ia"),  # 10: already prefixed
        (200.0, 1.0, "SN II"),  # 11
        (200.0, 1.0, "SN IIb"),  # 12: exact duplicate position
    ]
    ra_wrap = 360.0 - 0.5 * ARCSEC / math.cos(math.radians(0.0))
    alerts = [  # ra, dec, expected
        (10.0, 20.0, "(TNS) nearest"),
        (50.0, 10.0, "Unknown"),
        (60.0, -30.0, "(TNS) inside"),
        (70.0, 0.0, "(TNS) tie-first"),
        (ra_wrap, 0.0, "(TNS) wrap-east"),  # 0.8" across RA = 0/360
        (359.9999, 45.0, "Unknown"),
        (0.0, 89.9999, "(TNS) north"),  # 0.72" across the pole
        (270.0, -89.99995, "(TNS) south"),  # 0.36" across the pole
        (120.0, 60.0 + 0.2 * ARCSEC, "(TNS) SN Ia"),
        (200.0, 1.0 + 0.1 * ARCSEC, "(TNS) SN II"),
        (None, None, "Unknown"),
        (300.0, -10.0, "Unknown"),
    ]
    cat_table = pa.table(
        {
            "ra": [c[0] for c in cat],
            "declination": [c[1] for c in cat],
            "type": pa.array([c[2] for c in cat], pa.string()),
        }
    )
    alert_table = pa.Table.from_pylist(
        [{"objectId": f"a{i}", "candidate": {"ra": a[0], "dec": a[1]}} for i, a in enumerate(alerts)],
        schema=prune_schema(("objectId", "candidate.ra", "candidate.dec")),
    )
    return alert_table, cat_table, [a[2] for a in alerts]


def test_prepare_tns_catalog():
    _, raw, _ = tns_cases()
    prepared = T.prepare_tns_catalog(raw)
    assert prepared.num_rows == raw.num_rows - 1
    types = prepared.column("type").to_pylist()
    assert all(t.startswith("(TNS) ") and not t.startswith("(TNS) (TNS)") for t in types)
    assert prepared.column("_tns_index").to_pylist() == list(range(prepared.num_rows))
    assert T.prepare_tns_catalog(prepared).column("type").to_pylist() == types  # idempotent


def test_load_tns_catalog(tmp_path):
    _, raw, _ = tns_cases()
    pq.write_table(raw.append_column("name", pa.array(["x"] * raw.num_rows)), tmp_path / "tns.parquet")
    loaded = T.load_tns_catalog(str(tmp_path / "tns.parquet"))
    assert loaded.equals(T.prepare_tns_catalog(raw))


def test_tnsclass_arrow_cases():
    alerts, cat, want = tns_cases()
    ra, dec = C.arrow_field(alerts, "candidate.ra"), C.arrow_field(alerts, "candidate.dec")
    assert T.tnsclass_arrow(ra, dec, cat).to_pylist() == want
    assert T.tnsclass_arrow(ra, dec, None).to_pylist() == ["Unknown"] * len(want)
    # ties go to the first source of the catalogue: reversing the catalogue flips them
    flipped = T.tnsclass_arrow(ra, dec, cat.take(list(range(cat.num_rows))[::-1])).to_pylist()
    assert flipped[3] == "(TNS) tie-second" and flipped[9] == "(TNS) SN IIb"


@pytest.mark.spark
def test_tnsclass_spark_cases(spark):
    alerts, cat, want = tns_cases()
    df = spark.createDataFrame(alerts)
    out = T.with_tnsclass(df, cat)
    assert out.columns == df.columns + ["tnsclass"]
    got = {r["objectId"]: r["tnsclass"] for r in out.collect()}
    assert [got[f"a{i}"] for i in range(len(want))] == want
    # a raw Spark catalogue (a null type, unprefixed types, no index column) gives the same answer
    got2 = {r["objectId"]: r["tnsclass"] for r in T.with_tnsclass(df, spark.createDataFrame(cat)).collect()}
    assert got2 == got
    # no catalogue: a literal "Unknown", no join
    prepared, column = T.tnsclass_column(df)
    assert prepared is df
    assert {r[0] for r in df.select(column).collect()} == {"Unknown"}


def random_sky(n_alerts: int, n_cat: int, seed: int = 3) -> tuple[pa.Table, pa.Table]:
    """Alerts and a catalogue with many sources within a few arcsec, poles and RA wrap."""
    rng = np.random.default_rng(seed)
    centres_ra = np.concatenate([rng.random(n_cat // 2) * 360, rng.choice([0.0, 359.99999, 180.0], n_cat // 4)])
    centres_dec = np.concatenate([rng.random(n_cat // 2) * 180 - 90, rng.choice([89.9999, -89.9998, 0.0, 30.0], n_cat // 4)])
    m = len(centres_ra)
    cat_ra = np.mod(centres_ra + rng.normal(0, 0.5, m) * ARCSEC, 360)
    cat_dec = np.clip(centres_dec + rng.normal(0, 0.5, m) * ARCSEC, -90, 90)
    pick = rng.integers(0, m, n_alerts)
    spread = rng.choice([0.3, 1.0, 3.0], n_alerts) * ARCSEC
    a_dec = np.clip(cat_dec[pick] + rng.normal(0, 1, n_alerts) * spread, -90, 90)
    cos = np.maximum(np.cos(np.radians(a_dec)), 1e-6)
    a_ra = np.mod(cat_ra[pick] + rng.normal(0, 1, n_alerts) * spread / cos, 360)
    catalog = pa.table(
        {
            "ra": cat_ra,
            "declination": cat_dec,
            "type": pa.array([None if rng.random() < 0.05 else f"T{i}" for i in range(m)], pa.string()),
        }
    )
    alerts = pa.Table.from_pylist(
        [{"objectId": f"a{i}", "candidate": {"ra": float(r), "dec": float(d)}} for i, (r, d) in enumerate(zip(a_ra, a_dec))],
        schema=prune_schema(("objectId", "candidate.ra", "candidate.dec")),
    )
    return alerts, catalog


@pytest.mark.spark
def test_tnsclass_spark_matches_numpy_random(spark):
    alerts, catalog = random_sky(3000, 1200)
    want = T.tnsclass_arrow(C.arrow_field(alerts, "candidate.ra"), C.arrow_field(alerts, "candidate.dec"), catalog)
    want = want.to_pylist()
    matched = sum(w != "Unknown" for w in want)
    assert 500 < matched < 2900  # both outcomes well represented
    out = T.with_tnsclass(spark.createDataFrame(alerts), catalog)
    rows = out.collect()
    assert len(rows) == alerts.num_rows  # the join keeps exactly one row per alert
    got = {r["objectId"]: r["tnsclass"] for r in rows}
    assert [got[f"a{i}"] for i in range(alerts.num_rows)] == want


def test_tnsclass_numpy_matches_brute_force():
    alerts, catalog = random_sky(400, 300, seed=5)
    prepared = T.prepare_tns_catalog(catalog)
    ra = C.arrow_field(alerts, "candidate.ra").to_numpy()
    dec = C.arrow_field(alerts, "candidate.dec").to_numpy()
    c_ra, c_dec = prepared.column("ra").to_numpy(), prepared.column("declination").to_numpy()
    # brute force with the 3D chord distance (what astropy's match_to_catalog_sky uses)
    def xyz(r, d):
        r, d = np.radians(r), np.radians(d)
        return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)

    chord = np.linalg.norm(xyz(ra, dec)[:, None, :] - xyz(c_ra, c_dec)[None, :, :], axis=-1)
    sep = np.degrees(2 * np.arcsin(chord / 2))
    best = np.argmin(sep, axis=1)
    types = prepared.column("type").to_pylist()
    want = [types[j] if sep[i, j] < 1.5 * ARCSEC else "Unknown" for i, j in enumerate(best)]
    assert T.tnsclass_arrow(ra, dec, catalog).to_pylist() == want


# --------------------------------------------------------------------------------------------
# Livestream filters
# --------------------------------------------------------------------------------------------


def r2_score(jd, magpsf, fid, min_points=5):
    """filter_yso_spicy_candidates.r2_score, in double precision."""
    magpsf = np.asarray(magpsf, dtype=float)
    mask = ~np.isnan(magpsf) & (np.asarray(fid, dtype=float) == 2)
    if sum(mask) < min_points:
        return np.nan
    x, y = np.asarray(jd, dtype=float)[mask], magpsf[mask]
    sxx = np.sum((x - x.mean()) ** 2)
    if sxx == 0:
        return np.nan
    beta1 = np.sum((x - x.mean()) * (y - y.mean())) / sxx
    y_hat = y.mean() - beta1 * x.mean() + beta1 * x
    ss_tot = np.sum((y - y.mean()) ** 2)
    return 1.0 - np.sum((y - y_hat) ** 2) / ss_tot if ss_tot != 0 else np.nan


def concat_col(table: pa.Table, name: str) -> pd.Series:
    """fink_utils concat_col: prv_candidates.<name> + [candidate.<name>] (nulls as NaN)."""
    prv = table.column("prv_candidates").to_pylist()
    cur = C.arrow_field(table, f"candidate.{name}").to_pylist()
    out = []
    for past, now in zip(prv, cur):
        values = ([p[name] for p in past] if past is not None else []) + [now]
        out.append(np.array([np.nan if v is None else v for v in values], dtype=float))
    return pd.Series(out)


def pandas_filters(table: pa.Table) -> dict[str, np.ndarray]:
    """Each filter computed independently with pandas, as the Fink code does."""
    p = to_pandas_inputs(table, C.FINKCLASS_INPUT_COLUMNS + ("tns", "spicy_class", "candidate.magpsf"))
    flags = fink_reference_flags(p)
    slope = pd.Series(
        [None if s is None else s["linear_fit_slope"] for s in table.column("lc_features_r").to_pylist()],
        dtype=float,
    )
    r2 = pd.Series(
        [r2_score(j, m, f) for j, m, f in zip(concat_col(table, "jd"), concat_col(table, "magpsf"), concat_col(table, "fid"))]
    )
    unknowns = fink_reference_finkclass(p, tracklet=pd.Series([""] * len(p))) == "Unknown"
    out = {
        "early_sn_candidates": flags["sn_early"],
        "sn_candidates": flags["sn"],
        "kn_candidates": flags["kn"],
        "microlensing_candidates": flags["mulens"],
        "sso_ztf_candidates": flags["roid_3"],
        "sso_fink_candidates": flags["roid_2"],
        "tracklet_candidates": flags["tracklet"],
        "simbad_candidates": flags["simbad"],
        "unknowns": unknowns,
        "blazar": p.cdsxmatch.isin(["Blazar", "Blazar_Candidate", "BLLac", "BLLac_Candidate"]),
        "yso_candidates": (p.cdsxmatch.to_numpy() == "Candidate_YSO")
        | (p.cdsxmatch.to_numpy() == "Candidate_TTau*")
        | (p.cdsxmatch.to_numpy() == "YSO_Candidate")
        | (p.cdsxmatch.to_numpy() == "TTau*_Candidate"),
        "yso_spicy_candidates": (r2 > 0.6) & ~p.spicy_class.isin(["Unknown", None, np.nan]) & (slope.abs() > 0.025),
        "tns_match": (p.tns != "") & (p.jd.astype(float) - p.jdstarthist.astype(float) <= 30),
        "simbad_grav_candidates": p.cdsxmatch.isin(list(FL.GRAVITATION_LABELS)),
        "vra": (p.cdsxmatch == "Unknown") & (p.roid != 3) & (p.magpsf > 19.5) & (p.drb > 0.5),
    }
    return {k: np.asarray(v, dtype=bool) for k, v in out.items()}


@pytest.fixture(scope="module")
def filter_table() -> pa.Table:
    return random_alerts(1500, seed=11)


@pytest.mark.spark
def test_filters_spark_match_pandas(spark, filter_table):
    want = pandas_filters(filter_table)
    assert set(want) == set(FL.LIVESTREAM_FILTERS)
    indexed = filter_table.append_column("_row", pa.array(np.arange(filter_table.num_rows), pa.int64()))
    df = spark.createDataFrame(indexed)
    cols = [f.column().alias(name) for name, f in FL.LIVESTREAM_FILTERS.items()]
    rows = df.select("_row", *cols).orderBy("_row").collect()
    flags = C.finkclass_flags_arrow(filter_table)
    for name, flt in FL.LIVESTREAM_FILTERS.items():
        got = np.array([r[name] for r in rows], dtype=object)
        assert all(v is True or v is False for v in got), f"{name} returned nulls"
        assert np.array_equal(got.astype(bool), want[name]), name
        assert 0 < want[name].sum() < len(got), f"{name}: degenerate test data"
        if flt.fink_flag is not None:  # the filter is exactly the finkclass flag
            assert np.array_equal(got.astype(bool), flags[flt.fink_flag]), name
    # filter() keeps exactly the selected rows
    sn = FL.LIVESTREAM_FILTERS["sn_candidates"]
    kept = {r["_row"] for r in sn.apply(df).select("_row").collect()}
    assert kept == set(np.flatnonzero(want["sn_candidates"]).tolist())


@pytest.mark.spark
def test_filter_columns_read_suffice(spark):
    """Each filter resolves on a DataFrame pruned to its `columns_read` (column pruning)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    for name, flt in FL.LIVESTREAM_FILTERS.items():
        df = spark.createDataFrame([], from_arrow_schema(prune_schema(flt.columns_read)))
        assert df.select(flt.column().alias("keep")).schema["keep"].dataType.typeName() == "boolean", name


def test_filter_registry():
    required = {
        "early_sn_candidates", "sn_candidates", "kn_candidates", "microlensing_candidates",
        "sso_ztf_candidates", "sso_fink_candidates", "tracklet_candidates", "simbad_candidates",
        "unknowns", "blazar", "yso_candidates", "yso_spicy_candidates", "tns_match",
        "simbad_grav_candidates", "vra",
    }  # fmt: skip
    assert required <= set(FL.LIVESTREAM_FILTERS)
    for name, flt in FL.LIVESTREAM_FILTERS.items():
        assert flt.name == name and flt.description
        assert flt.fink_module.endswith(f".filter_{name}.filter.{name}")
        assert FL.resolve_filter(flt.fink_module) is flt
        assert all(isinstance(c, str) and c for c in flt.columns_read)
    assert FL.LIVESTREAM_FILTERS["sn_candidates"].fink_class == "SN candidate"
    assert FL.LIVESTREAM_FILTERS["tracklet_candidates"].fink_module == (
        "fink_filters.ztf.filter_tracklet_candidates.filter.tracklet_candidates"
    )
    assert not set(FL.UNSUPPORTED_FILTERS) & set(FL.LIVESTREAM_FILTERS)


@pytest.mark.parametrize(
    "query",
    [
        "sn_candidates",
        " sn_candidates ",
        "filter_sn_candidates",
        "fink_filters.ztf.livestream.filter_sn_candidates.filter.sn_candidates",
        "fink_filters.filter_sn_candidates.filter.sn_candidates",
    ],
)
def test_resolve_filter_forms(query):
    assert FL.resolve_filter(query).name == "sn_candidates"


def test_resolve_filter_errors():
    with pytest.raises(ValueError, match="did you mean sn_candidates"):
        FL.resolve_filter("sn_candidate")
    with pytest.raises(ValueError, match="did you mean blazar"):
        FL.resolve_filter("fink_filters.ztf.livestream.filter_blazr.filter.blazr")
    with pytest.raises(ValueError, match="valid names"):
        FL.resolve_filter("")
    with pytest.raises(FL.UnsupportedFilterError, match="SDSS"):
        FL.resolve_filter("fink_filters.ztf.livestream.filter_early_kn_candidates.filter.early_kn_candidates")
    with pytest.raises(FL.UnsupportedFilterError, match="cutouts"):
        FL.resolve_filter("new_hostless")
