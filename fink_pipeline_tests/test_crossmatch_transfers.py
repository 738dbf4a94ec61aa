"""Catalogue cross-match transfers (Fink's `fxmatch_` service, issue 16) through the user's commands.

Real ZTF alerts (Fink-processed samples of ../shared/data) are imported into an archive and a
catalogue is made from their positions (jittered by less than 1 arcsec, some rows sexagesimal,
ids as text), two sources around one alert, a near miss, sources on a night outside the request
and random positions. `fink-pipeline request submit --catalog ... --wait` must publish to an
`fxmatch_ztf_` topic exactly the (candid, id) pairs within the radius that astropy finds by brute
force over every (alert, source) pair, with Fink's Xmatch default content. A Rubin request keeps
its `ftransfer_lsst_` topic and its block, and gets the id column. A replay of a submitted request
matches against the catalogue as it was at submission (its stored index), and says so clearly when
neither that index nor that file is left.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from astropy.coordinates import Angle, SkyCoord

from fink_pipeline.archive.layout import night_dir
from fink_pipeline.cli.main import main
from fink_pipeline.consumer.readers import read_delta_table
from fink_pipeline.surveys import get_survey

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

RADIUS_ARCSEC = 1.5
# ZTF: a Fink Spark Avro (snappy) file and a Fink Parquet file of 2021-11-22, a 2021-06-04
# tracklet file (the request's nights), and a Data Transfer output of 2026-03-22 (outside them)
ZTF_START, ZTF_STOP = "2021-06-01", "2021-11-30"
ZTF_NIGHTS = [dt.date(2021, 6, 4), dt.date(2021, 11, 22)]
OTHER_NIGHT = dt.date(2026, 3, 22)
LSST_NIGHT = dt.date(2026, 7, 1)
LSST_ALERTS = 2000


# ---------------------------------------------------------------------------------------------
# archives and catalogues


@pytest.fixture(scope="module")
def ztf_archive(shared_data, tmp_path_factory) -> str:
    from fink_pipeline.archive.importer import import_alerts

    root = str(tmp_path_factory.mktemp("xmatch_ztf_archive"))
    fink = shared_data / "ztf" / "fink"
    sources = [fink / "science_avro_snappy", fink / "science_parquet" / "fink-science_datatest",
               fink / "science_parquet" / "fink-broker_tracklet", fink / "ftransfer_avro" / "part-3-305711.avro"]
    report = import_alerts(sources, get_survey("ztf"), root)
    assert report.failed_files == [] and report.total_imported > 150
    return root


@pytest.fixture(scope="module")
def lsst_archive(tmp_path_factory) -> str:
    from fink_pipeline.archive.generate import generate_archive

    root = str(tmp_path_factory.mktemp("xmatch_lsst_archive"))
    generate_archive(get_survey("lsst"), root, LSST_NIGHT, nights=1, alerts_per_night=LSST_ALERTS, seed=16,
                     with_cutouts=False)
    return root


@pytest.fixture
def managed_broker(kafka_broker, tmp_path, monkeypatch) -> str:
    """The session's broker as the one `fink-pipeline broker start` would have started; catalogue
    indexes under the state dir (`<state>/catalogs`)."""
    import fink_pipeline.kafka.broker as broker

    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("FINK_PIPELINE_CATALOG_DIR", raising=False)
    monkeypatch.setattr(broker, "status_managed", lambda state_dir: kafka_broker)
    return kafka_broker


def alert_positions(root: str, survey: str, nights, columns: dict[str, str]) -> pa.Table:
    """The alerts of `nights` read with pyarrow: {output name: dotted field}."""
    tables = []
    for night in nights:
        table = ds.dataset(night_dir(root, survey, night), format="parquet").to_table()
        out = {}
        for name, path in columns.items():
            column = table.column(path.split(".")[0])
            for part in path.split(".")[1:]:
                column = pa.chunked_array([chunk.field(part) for chunk in column.chunks])
            out[name] = column
        tables.append(pa.table(out))
    return pa.concat_tables(tables)


def offset(ra: float, dec: float, arcsec: float, angle_deg: float) -> tuple[float, float]:
    """The position `arcsec` away from (ra, dec) at position angle `angle_deg` (degrees)."""
    moved = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(angle_deg * u.deg, arcsec * u.arcsec)
    return float(moved.ra.deg), float(moved.dec.deg)


def sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    """RA in hours and Dec in degrees, colon separated, to ~0.0002 arcsec."""
    return (Angle(ra, u.deg).to_string(unit=u.hourangle, sep=":", precision=5, pad=True),
            Angle(dec, u.deg).to_string(unit=u.deg, sep=":", precision=4, pad=True, alwayssign=True))


def write_catalog(path: Path, rows: list[tuple[str, float, float]], columns=("name", "RAJ2000", "DEJ2000"),
                  sexagesimal_every: int = 3) -> None:
    """A CSV of (id, ra, dec) rows; every `sexagesimal_every`-th row in sexagesimal text."""
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for i, (name, ra, dec) in enumerate(rows):
            if sexagesimal_every and i % sexagesimal_every == 0:
                writer.writerow([name, *sexagesimal(ra, dec)])
            else:
                writer.writerow([name, f"{ra:.9f}", f"{dec:.9f}"])


def read_catalog_text(path: Path, columns=("name", "RAJ2000", "DEJ2000")) -> tuple[list[str], SkyCoord]:
    """The catalogue as written, parsed by astropy (independently of the pipeline's reader)."""
    with open(path, newline="") as source:
        records = list(csv.DictReader(source))
    ids = [r[columns[0]] for r in records]
    ra = [Angle(r[columns[1]], u.hourangle).deg if ":" in r[columns[1]] else float(r[columns[1]]) for r in records]
    dec = [Angle(r[columns[2]], u.deg).deg if ":" in r[columns[2]] else float(r[columns[2]]) for r in records]
    return ids, SkyCoord(np.array(ra) * u.deg, np.array(dec) * u.deg)


def brute_force_pairs(alert_ids, alert_ra, alert_dec, ids, sources: SkyCoord) -> set[tuple]:
    """Every (alert id, source id) whose separation is at most the radius (all pairs by astropy)."""
    alerts = SkyCoord(np.asarray(alert_ra, dtype=float) * u.deg, np.asarray(alert_dec, dtype=float) * u.deg)
    separation = alerts[:, None].separation(sources[None, :])
    rows, cols = np.nonzero(separation <= RADIUS_ARCSEC * u.arcsec)
    return {(alert_ids[i], ids[j]) for i, j in zip(rows, cols)}


def random_sky(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    return list(zip(ra.tolist(), dec.tolist()))


def ztf_catalog_rows(archive: str, seed: int = 16) -> tuple[list[tuple[str, float, float]], dict]:
    """Sources near 12 alerts of the request (< 1 arcsec), two sources 0.7 arcsec either side of
    one more alert, a source 2.5 arcsec from another, three near alerts of a night outside the
    request, 300 random positions. Ids are text ('0042' stays text)."""
    rng = np.random.default_rng(seed)
    alerts = alert_positions(archive, "ztf", ZTF_NIGHTS, {"candid": "candid", "objectId": "objectId",
                                                           "ra": "candidate.ra", "dec": "candidate.dec",
                                                           "jd": "candidate.jd"})
    first = {}  # one alert per object, in a stable order
    for candid, object_id, ra, dec in zip(*(alerts.column(c).to_pylist() for c in ("candid", "objectId", "ra", "dec"))):
        first.setdefault(object_id, (candid, ra, dec))
    chosen = [first[k] for k in sorted(first)]
    picks = rng.choice(len(chosen), size=15, replace=False)
    rows: list[tuple[str, float, float]] = []
    for n, k in enumerate(picks[:12]):
        _, ra, dec = chosen[k]
        rows.append((f"src-{n:04d}", *offset(ra, dec, rng.uniform(0.1, 0.95), rng.uniform(0, 360))))
    pair_candid, ra, dec = chosen[picks[12]]
    rows.append(("0042", *offset(ra, dec, 0.7, 10.0)))  # two sources 1.4 arcsec apart,
    rows.append(("pair-b", *offset(ra, dec, 0.7, 190.0)))  # each 0.7 arcsec from the alert
    _, ra, dec = chosen[picks[13]]
    rows.append(("near-miss", *offset(ra, dec, 2.5, 45.0)))
    other = alert_positions(archive, "ztf", [OTHER_NIGHT], {"ra": "candidate.ra", "dec": "candidate.dec"})
    for n in range(3):
        rows.append((f"other-night-{n}", *offset(other["ra"][n].as_py(), other["dec"][n].as_py(), 0.3, 90.0)))
    rows += [(f"J{n:05d}", ra, dec) for n, (ra, dec) in enumerate(random_sky(rng, 300))]
    order = rng.permutation(len(rows))
    info = {"alerts": alerts, "pair_candid": pair_candid}
    return [rows[i] for i in order], info


def run_cli(*args: str) -> tuple[int, str, str]:
    """`fink-pipeline ARGS` in process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def download(topic: str, broker: str, outdir: Path) -> pa.Table:
    """Our `fink_datatransfer` consumer, as a user runs it, into a folder."""
    from fink_pipeline.cli.datatransfer import main as datatransfer_main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert datatransfer_main(["-topic", topic, "-outdir", str(outdir), "-servers", broker,
                                  "-groupid", f"test_{topic}_{outdir.name}"]) == 0
    return read_delta_table(str(outdir))


def pairs_of(table: pa.Table, alert_id: str, id_col: str) -> list[tuple]:
    return sorted(zip(table.column(alert_id).to_pylist(), table.column(id_col).to_pylist()))


# ---------------------------------------------------------------------------------------------
# ZTF: fxmatch_ztf_ topic, exact pairs


@pytest.fixture(scope="module")
def ztf_xmatch(ztf_archive, kafka_broker, tmp_path_factory):
    """One ZTF cross-match request through `request validate`, `estimate` and `submit --wait`,
    downloaded by our `fink_datatransfer`; the state dir (and the broker as the managed one)
    stays set for the module's tests."""
    import fink_pipeline.kafka.broker as broker

    base = tmp_path_factory.mktemp("xmatch_ztf")
    rows, info = ztf_catalog_rows(ztf_archive)
    catalog = base / "my_sources.csv"
    write_catalog(catalog, rows)
    sha256 = hashlib.sha256(catalog.read_bytes()).hexdigest()
    ids, sources = read_catalog_text(catalog)
    alerts = info["alerts"]
    expected = brute_force_pairs(alerts["candid"].to_pylist(), alerts["ra"].to_numpy(), alerts["dec"].to_numpy(),
                                 ids, sources)
    args = ["--survey", "ztf", "--start", ZTF_START, "--stop", ZTF_STOP, "--archive", ztf_archive,
            "--catalog", str(catalog), "--ra-col", "RAJ2000", "--dec-col", "DEJ2000", "--id-col", "name",
            "--radius-arcsec", str(RADIUS_ARCSEC)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINK_PIPELINE_HOME", str(base / "state"))
        patch.delenv("FINK_PIPELINE_CATALOG_DIR", raising=False)
        patch.setattr(broker, "status_managed", lambda state_dir: kafka_broker)
        validate = run_cli("request", "validate", *args)
        estimate = run_cli("request", "estimate", *args)
        submit = run_cli("request", "submit", *args, "--tables", str(base / "tables"), "--wait")
        assert submit[0] == 0, submit[2]
        topic = submit[1].splitlines()[0]
        yield SimpleNamespace(
            base=base, catalog=catalog, sha256=sha256, rows=rows, info=info, alerts=alerts, expected=expected, broker=kafka_broker,
            archive=ztf_archive, validate=validate, estimate=estimate, submit=submit, topic=topic,
            tables=base / "tables", downloaded=download(topic, kafka_broker, base / "out"),
            pipeline_table=read_delta_table(str(base / "tables" / topic)),
        )


def test_ztf_catalog_is_built_as_meant(ztf_xmatch):
    """The catalogue of real alert positions does what it was built for (by astropy alone)."""
    expected, info = ztf_xmatch.expected, ztf_xmatch.info
    lines = ztf_xmatch.catalog.read_text().splitlines()
    assert sum(":" in line for line in lines) == (len(ztf_xmatch.rows) + 2) // 3  # sexagesimal rows
    # 12 jittered sources and the two sources of one alert match; the near miss, the other
    # night's sources and the 300 random positions do not
    assert {source for _, source in expected} == {f"src-{n:04d}" for n in range(12)} | {"0042", "pair-b"}
    assert {(info["pair_candid"], "0042"), (info["pair_candid"], "pair-b")} <= expected
    assert len(expected) >= 14


def test_ztf_validate_and_estimate_show_the_catalogue_and_the_exact_pair_count(ztf_xmatch):
    expected = ztf_xmatch.expected
    rc, out, err = ztf_xmatch.validate
    assert rc == 0, err
    lines = out.splitlines()
    assert f"  catalogue:  my_sources.csv ({len(ztf_xmatch.rows):,} sources, radius 1.5 arcsec), ids in column name " \
           f"(sha256 {ztf_xmatch.sha256[:12]}…)" in lines
    assert "  content:    ['objectId', 'candid', 'jd', 'name'] (4 columns)" in lines
    rc, out, err = ztf_xmatch.estimate
    assert rc == 0, err
    assert f"note: catalogue: {len(expected):,} (alert, source) pairs within the radius (exact: every alert's " \
           "position matched)" in out
    assert f"total: {len(expected):,} alerts" in out


def test_ztf_catalog_crossmatch_publishes_every_pair_within_the_radius(ztf_xmatch):
    expected, info, alerts, topic = ztf_xmatch.expected, ztf_xmatch.info, ztf_xmatch.alerts, ztf_xmatch.topic
    assert topic.startswith("fxmatch_ztf_")
    assert ztf_xmatch.submit[1].splitlines()[-1] == f"{len(expected)} alerts published to {topic}"

    table = ztf_xmatch.downloaded
    data = [c for c in table.column_names if c not in ("year", "month", "day")]
    assert data == ["objectId", "candid", "jd", "name"]
    assert table.schema.field("name").type == pa.string() and table.schema.field("candid").type == pa.int64()
    got = pairs_of(table, "candid", "name")
    assert len(got) == len(expected), "one row per (alert, source) pair"
    assert set(got) == expected
    # the alert between two sources is published twice, once with each id ('0042' stays text)
    assert sorted(s for c, s in got if c == info["pair_candid"]) == ["0042", "pair-b"]
    # the rows are the alerts' own: objectId and jd of the candid
    by_candid = {c: (o, j) for c, o, j in zip(*(alerts[k].to_pylist() for k in ("candid", "objectId", "jd")))}
    assert [by_candid[c] for c in table["candid"].to_pylist()] == list(zip(table["objectId"].to_pylist(),
                                                                           table["jd"].to_pylist()))
    # the pipeline's own Delta table of the topic: the same pairs, by night (no finkclass in the content)
    from deltalake import DeltaTable

    assert pairs_of(ztf_xmatch.pipeline_table, "candid", "name") == got
    assert DeltaTable(str(ztf_xmatch.tables / topic)).metadata().partition_columns == ["year", "month", "day"]


# ---------------------------------------------------------------------------------------------
# LSST: ftransfer_lsst_ topic, a block, the id column added to the packet


def test_lsst_block_and_catalog_publish_the_pairs_of_the_selected_alerts(spark, lsst_archive, managed_broker,
                                                                         tmp_path):
    survey = get_survey("lsst")
    alerts = alert_positions(lsst_archive, "lsst", [LSST_NIGHT], {"diaSourceId": "diaSourceId",
                                                                 "ra": "diaSource.ra", "dec": "diaSource.dec"})
    rng = np.random.default_rng(7)
    picks = rng.choice(alerts.num_rows, size=80, replace=False)
    # integer ids; sources within 1 arcsec of 80 alerts, 100 random ones
    rows = [(str(1000 + n), *offset(alerts["ra"][int(k)].as_py(), alerts["dec"][int(k)].as_py(),
                                    rng.uniform(0.0, 0.9), rng.uniform(0, 360))) for n, k in enumerate(picks)]
    rows += [(str(5000 + n), ra, dec) for n, (ra, dec) in enumerate(random_sky(rng, 100))]
    catalog = tmp_path / "lsst_sources.csv"
    write_catalog(catalog, rows, columns=("source_id", "ra", "dec"), sexagesimal_every=0)
    ids, sources = read_catalog_text(catalog, columns=("source_id", "ra", "dec"))
    every_pair = brute_force_pairs(alerts["diaSourceId"].to_pylist(), alerts["ra"].to_numpy(),
                                   alerts["dec"].to_numpy(), [int(i) for i in ids], sources)
    # the block's selection, by the pipeline's own expression (the block is tested elsewhere)
    df = spark.read.parquet(night_dir(lsst_archive, "lsst", LSST_NIGHT))
    kept = {r[0] for r in df.filter(survey.blocks["b_good_quality"].column()).select("diaSourceId").collect()}
    expected = {(a, s) for a, s in every_pair if a in kept}
    assert 0 < len(expected) < len(every_pair), "the block removes some matched alerts, not all"

    rc, out, err = run_cli("request", "submit", "--survey", "lsst", "--start", LSST_NIGHT.isoformat(),
                           "--stop", LSST_NIGHT.isoformat(), "--archive", lsst_archive,
                           "--tables", str(tmp_path / "tables"), "--block", "b_good_quality",
                           "--catalog", str(catalog), "--id-col", "source_id", "--radius-arcsec", "1.5", "--wait")
    assert rc == 0, err
    topic = out.splitlines()[0]
    assert topic.startswith("ftransfer_lsst_")
    assert out.splitlines()[-1] == f"{len(expected)} alerts published to {topic}"
    table = read_delta_table(str(tmp_path / "tables" / topic))
    data = [c for c in table.column_names if c not in ("year", "month", "day")]
    assert data[-1] == "source_id" and table.schema.field("source_id").type == pa.int64()
    got = pairs_of(table, "diaSourceId", "source_id")
    assert len(got) == len(expected) and set(got) == expected
    assert "cutoutScience" not in table.column_names and "midpointMjdTai" in table.column_names  # Light packet


# ---------------------------------------------------------------------------------------------
# replay: the catalogue as submitted


def delete_topics(broker: str, topic: str) -> None:
    """The broker lost the topic (retention, a broker without its data): delete it and its companions."""
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.kafka.topics import delete_topic
    from fink_pipeline.kafka.wire import schema_topic, status_topic

    settings = KafkaSettings(bootstrap_servers=broker)
    for name in (topic, schema_topic(topic), status_topic(topic)):
        assert delete_topic(settings, name), name


def test_replay_uses_the_catalogue_as_submitted_and_refuses_a_changed_one(ztf_xmatch):
    """After the submission of `ztf_xmatch`, the file is overwritten with other sources and the
    topic is lost: `request run` publishes the submitted matches again (stored index); without the
    index, the changed file is refused in one clear line."""
    topic, tables, archive = ztf_xmatch.topic, ztf_xmatch.tables, ztf_xmatch.archive
    first = pairs_of(ztf_xmatch.pipeline_table, "candid", "name")
    assert set(first) == ztf_xmatch.expected and len(first) == len(ztf_xmatch.expected)

    # the file now holds other sources (near other alerts): they would give other pairs
    changed, _ = ztf_catalog_rows(archive, seed=4)
    write_catalog(ztf_xmatch.catalog, changed)
    alerts = ztf_xmatch.alerts
    other = brute_force_pairs(alerts["candid"].to_pylist(), alerts["ra"].to_numpy(), alerts["dec"].to_numpy(),
                              *read_catalog_text(ztf_xmatch.catalog))
    assert other and other != ztf_xmatch.expected
    delete_topics(ztf_xmatch.broker, topic)
    shutil.rmtree(tables / topic)
    rc, out, err = run_cli("request", "run", topic, "--archive", archive, "--tables", str(tables))
    assert rc == 0, out + err
    assert out.splitlines()[-1] == f"{len(first)} alerts published to {topic}"
    assert pairs_of(read_delta_table(str(tables / topic)), "candid", "name") == first

    # without its index the changed file cannot stand in for the submitted catalogue
    indexes = list((ztf_xmatch.base / "state" / "catalogs").glob("*.arrow"))
    assert len(indexes) == 1
    indexes[0].unlink()
    rc, out, err = run_cli("request", "run", topic, "--archive", archive, "--tables", str(tables))
    assert rc == 1
    message = out.splitlines()[-1]
    assert message.startswith(f"transfer failed: transfer_request: {ztf_xmatch.catalog} changed since the request "
                              f"was submitted (sha256 {ztf_xmatch.sha256[:12]}… then"), out + err
    assert "resubmit the request" in message
