"""Our Rubin filters and blocks select exactly the alerts fink-filters 7.45 selects.

Opt-in (`pytest -m compat -k fink_filters`): fink-filters pins nothing and its Rubin code needs
astropy, scipy (astropy's cosmology) and pandas < 3, so it runs from a separate virtualenv,
`.venv-compat-filters` (or $FINK_FILTERS_COMPAT_VENV), created here with `python -m venv` and
`pip install fink-filters==7.45 fink-utils==0.79.0 astropy pyspark==4.3.0 'pandas<3' pyarrow
scipy` when missing (network access to PyPI needed once). scipy is not in fink-filters'
metadata but Fink's environment has it: without it `sn_near_galaxy_candidate` raises as soon as
an alert reaches the distance computation.

`fink_filters_runner.py` applies every Rubin filter and block as Fink's LSST transfer job does
(`expand_function_from_string` + `FinkUDF(...).for_spark(*cols)` on a Spark DataFrame read from
a Parquet file; astropy offline, see its docstring) and writes the selected diaSourceIds; the
same Parquet file goes through our `SelectionFunction`s. Inputs:

* the Fink-processed Rubin samples of ../shared/data (lsst/fink/parquet/*.parquet and the Data
  Transfer Avro output as Parquet);
* a generated LSST night (`SURVEY.generate_night`);
* the same kind of night bent towards the edges (`rubin_edge_night.py`).

Every name must select the same ids. Exceptions, each printed in the table: a name whose input
column a sample lacks is skipped there (the table says which column); the Monte Carlo names
(`b_mag_rate_mc_sampling`, `fast_transient_gvom`) may differ only on alerts whose analytic rate
or significance lies within `MC_SIGMAS` Monte-Carlo standard errors of a threshold (counted);
where Fink's code fails on an input the failure is shown and our result is not compared.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import subprocess
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.lsst.selections import RUBIN_BLOCKS, RUBIN_FILTERS
from fink_pipeline.surveys.lsst.selections import labels as our_labels

# one Fink run per input (about 1-2.5 min each) happens in the first test's fixture
pytestmark = [pytest.mark.compat, pytest.mark.spark, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[1]
COMPAT_VENV = Path(os.environ.get("FINK_FILTERS_COMPAT_VENV", REPO / ".venv-compat-filters"))
REQUIREMENTS = ("fink-filters==7.45", "fink-utils==0.79.0", "astropy", "pyspark==4.3.0", "pandas<3", "pyarrow",
                "scipy")  # fmt: skip
RUNNER = Path(__file__).with_name("fink_filters_runner.py")
NIGHT = dt.date(2026, 6, 2)
NIGHT_ALERTS = 10_000  # the size the generator is calibrated on: every name selects some alerts
EDGE_ALERTS = 2400
MC_NAMES = ("b_mag_rate_mc_sampling", "fast_transient_gvom")
MC_SAMPLES = 1000
MC_SIGMAS = 4.0
ALL = {**RUBIN_FILTERS, **RUBIN_BLOCKS}


def compat_python() -> Path:
    """The interpreter of the compat virtualenv, with fink-filters 7.45 installed (created if missing)."""
    python = COMPAT_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m, scipy, astropy;"
             "print(m.version('fink-filters'), m.version('fink-utils'))"]  # fmt: skip
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.split() == ["7.45", "0.79.0"]:
            return python
    if not python.exists():
        venv.create(COMPAT_VENV, with_pip=True)
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
                               capture_output=True, text=True, timeout=1800)  # fmt: skip
    if installed.returncode != 0:
        pytest.fail(f"could not install {' '.join(REQUIREMENTS)} into {COMPAT_VENV}: {installed.stderr[-2000:]}")
    return python


def run_fink(python: Path, parquet: Path, out: Path) -> dict:
    """Fink's selections on one Parquet file (fink_filters_runner.py in the compat venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK", "VIRTUAL_ENV"))}
    done = subprocess.run([str(python), str(RUNNER), str(parquet), str(out)], capture_output=True, text=True,
                          env=env, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def real_samples(shared: Path, tmp: Path) -> dict[str, Path]:
    """The Fink-processed Rubin samples, the Data Transfer Avro output converted to Parquet."""
    from fink_pipeline.archive.sources import SchemaRegistry, read_source

    out = {
        "processed": shared / "lsst/fink/parquet/rubin_v10_0_fink-processed.snappy.parquet",
        "ingested": shared / "lsst/fink/parquet/rubin_v10_0_fink-ingested.parquet",
    }
    avro = next((shared / "lsst/fink/ftransfer_avro").glob("*.avro"))
    _, schema, batches = read_source(str(avro), "avro", SchemaRegistry(None))
    out["ftransfer"] = tmp / "ftransfer.parquet"
    pq.write_table(pa.Table.from_batches(list(batches), schema=schema), out["ftransfer"])
    return out


def generated_night(tmp: Path, alerts: int, seed: int) -> Path:
    """One generated LSST night with cutouts, as one Parquet file."""
    survey = get_survey("lsst")
    path = tmp / f"night_{seed}.parquet"
    batches = list(survey.generate_night(NIGHT, alerts, seed=seed, with_cutouts=True))
    # row groups of 1,000 alerts: a reader never holds more than ~100 MB of cutouts at once
    pq.write_table(pa.Table.from_batches(batches, schema=survey.archive_schema), path, row_group_size=1000)
    return path


@dataclass
class Cell:
    """One name on one input: the counts, or why there is no comparison."""

    fink: int | None = None
    ours: int | None = None
    note: str = ""
    tolerated: int = 0
    mismatch: list[str] = field(default_factory=list)

    def text(self) -> str:
        if self.fink is None and self.ours is None:
            return self.note
        base = f"{self.fink}" if self.fink == self.ours else f"{self.fink} vs ours {self.ours}"
        if self.tolerated:
            base += f" ({self.tolerated} MC)"
        return base + (f" [{self.note}]" if self.note else "")


def has_field(schema, dotted: str) -> bool:
    """True when the Spark schema holds `dotted` (descending into structs and array elements)."""
    from pyspark.sql.types import ArrayType, StructType

    dtype = schema
    for part in dotted.split("."):
        while isinstance(dtype, ArrayType):
            dtype = dtype.elementType
        if not isinstance(dtype, StructType) or part not in dtype.fieldNames():
            return False
        dtype = dtype[part].dataType
    return True


def mc_tolerated(spark, df, name: str, ids: set[int]) -> tuple[int, list[int]]:
    """How many of the disagreeing `ids` lie within MC_SIGMAS Monte-Carlo standard errors of a
    threshold of the rate cut (and, for fast_transient_gvom, pass its other cuts); the others."""
    from pyspark.sql import functions as F

    from fink_pipeline.surveys.lsst.selections import filters as ff
    from fink_pipeline.surveys.lsst.selections.blocks import FLUX_RATE_PER_FLUX
    from fink_pipeline.surveys.lsst.selections.lightcurve import mc_flux_rate

    rate = mc_flux_rate()
    mean, std = rate["mean"], rate["std"]
    rest = F.lit(True)
    if name == "fast_transient_gvom":
        rest = ff.fb.extragalactic("loose", parallax="xm.gaiadr3_e_Plx") & ff.lt(ff._age(), 5.0) & ff.lt(ff._mag(), 21)
    rows = (df.filter(F.col("diaSourceId").isin(list(ids)))
            .select("diaSourceId", mean.alias("mean"), std.alias("std"), F.col("diaSource.psfFlux").alias("flux"),
                    rest.alias("rest")).collect())  # fmt: skip
    bad = []
    for r in rows:
        ok = r["rest"] and r["mean"] is not None and r["std"] is not None and r["std"] > 0
        if ok:
            threshold = FLUX_RATE_PER_FLUX * r["flux"]
            snr = abs(r["mean"]) / (r["std"] + 1e-10)
            se_snr = math.sqrt(1.0 / MC_SAMPLES + snr**2 / (2 * (MC_SAMPLES - 1)))
            near_rate = abs(r["mean"] - threshold) < MC_SIGMAS * r["std"] / math.sqrt(MC_SAMPLES)
            ok = near_rate or abs(snr - 3.0) < MC_SIGMAS * se_snr
        if not ok:
            bad.append(r["diaSourceId"])
    return len(rows) - len(bad), bad


def compare_input(spark, path: Path, fink: dict) -> dict[str, Cell]:
    """Every name on one input: ours against Fink's."""
    df = spark.read.parquet(str(path))
    cells = {}
    for name, selection in sorted(ALL.items()):
        theirs = fink["results"][name]
        missing = [c for c in selection.columns_read if not has_field(df.schema, c)]
        if missing:
            cell = Cell(note=f"skipped: no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
            if theirs["status"] == "ok":
                cell.mismatch.append(f"Fink ran without {missing}: columns_read lists more than Fink reads")
            cells[name] = cell
            continue
        ours = {r[0] for r in selection.apply(df).select("diaSourceId").collect()}
        if theirs["status"] != "ok":
            cells[name] = Cell(ours=len(ours), note=f"Fink {theirs['status']}: {theirs['error'][-160:]}")
            continue
        expected = set(theirs["ids"])
        cell = Cell(fink=len(expected), ours=len(ours))
        differ = ours ^ expected
        if differ and name in MC_NAMES:
            cell.tolerated, bad = mc_tolerated(spark, df, name, differ)
            differ = set(bad)
        if differ:
            cell.mismatch.append(f"only ours {sorted(ours - expected)[:5]}, only Fink's {sorted(expected - ours)[:5]}")
        cells[name] = cell
    return cells


@pytest.fixture(scope="module")
def comparison(spark, shared_data, tmp_path_factory):
    """{input label: (rows, {name: Cell})} and Fink's metadata of the first run."""
    from fink_pipeline_tests.rubin_edge_night import edge_night

    python = compat_python()
    tmp = tmp_path_factory.mktemp("compat_fink_filters")
    inputs = real_samples(shared_data, tmp)
    inputs["night"] = generated_night(tmp, NIGHT_ALERTS, seed=11)
    inputs["edges"] = Path(edge_night(spark, str(generated_night(tmp, EDGE_ALERTS, seed=5)), str(tmp / "edges")))
    out, meta = {}, None
    for label, path in inputs.items():
        fink = run_fink(python, path, tmp / f"{label}.json")
        meta = meta or fink
        out[label] = (fink["rows"], compare_input(spark, path, fink))
    return out, meta


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def _normal(text: str) -> str:
    return re.sub(r"[\s,\-]+", " ", text).strip()


def test_every_rubin_filter_and_block_is_replayed_with_finks_description(comparison):
    _, meta = comparison
    fink = meta["results"]
    assert sorted(fink) == sorted(ALL)
    for name, selection in ALL.items():
        assert selection.fink_module == fink[name]["module"], name
        assert _normal(selection.description) == _normal(fink[name]["description"]), name


def test_label_lists_are_fink_utils(comparison):
    _, meta = comparison
    lists = meta["labels"]
    assert list(our_labels.SIMBAD_EG_HOST_LABELS) == lists["eg_host"]
    assert list(our_labels.VSX_STELLAR_LABELS) == lists["vsx_stellar"]
    assert list(our_labels.VSX_NONSTELLAR_LABELS) == lists["vsx_nonstellar"]
    assert lists["bad_values"] == [*our_labels.BAD_VALUE_LABELS, "None", "nan"]


def test_selections_equal_finks_on_every_input(comparison, capsys):
    results, _ = comparison
    labels = list(results)
    header = ["name"] + [f"{label} ({results[label][0]})" for label in labels]
    rows = [[name] + [results[label][1][name].text() for label in labels] for name in sorted(ALL)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    with capsys.disabled():
        print("\nalerts selected (Fink's count; 'vs ours' where different; MC: tolerated Monte Carlo draws)")
        for r in [header, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    problems = [f"{label}/{name}: {m}" for label in labels for name, cell in results[label][1].items()
                for m in cell.mismatch]  # fmt: skip
    assert problems == []
