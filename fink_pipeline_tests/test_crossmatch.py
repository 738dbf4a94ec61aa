"""The catalogue cross-match: exact pairs against a brute force, where sky indexes break.

* The geometry the index relies on (a cell and its 8 neighbours hold every point closer than
  `CLEARANCE_FRACTION` x the mean cell size) is measured on every cell of depths 0 to 4.
* `CatalogIndex.match` against an exact brute force (Vincenty separation of every alert-source
  pair, no index): catalogues on RA = 0/360, at and near both poles, on HEALPix cell edges and
  vertices of the depth the index uses, on the 8 points where only 3 base cells meet, with
  radii mixing several depths.
* The Spark step (Arrow UDF + explode) and both publication paths (Spark projection, Arrow
  content read from the archive for repeated rows) give the same pairs and bytes.
* The catalogue is pinned to the request: an edited file does not change a submitted request's
  matches; a lost index and an edited file give a clear error, not other sources.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.crossmatch.catalog import CatalogError
from fink_pipeline.transfer.crossmatch.index import (
    CLEARANCE_FRACTION,
    angular_separation,
    build_index,
    depth_for_radius,
    mean_cell_size,
)
from fink_pipeline.transfer.crossmatch.prepare import CATALOG_DIR_ENV
from fink_pipeline.transfer.plan import pin_catalog, plan_transfer
from fink_pipeline.transfer.request import RequestError, TransferRequest, request_from_mapping

START = dt.date(2024, 3, 1)
ARCSEC = 1 / 3600


def brute_force_pairs(alert_ra, alert_dec, source_ra, source_dec, radius_arcsec) -> set[tuple[int, int]]:
    """Every (alert, source) within the source's radius, by computing every separation."""
    pairs: set[tuple[int, int]] = set()
    radius = np.radians(np.broadcast_to(np.asarray(radius_arcsec, dtype=float), np.shape(source_ra)) / 3600)
    for start in range(0, len(alert_ra), 2000):
        ra = np.radians(np.asarray(alert_ra[start:start + 2000]))[:, None]
        dec = np.radians(np.asarray(alert_dec[start:start + 2000]))[:, None]
        sep = angular_separation(ra, dec, np.radians(source_ra)[None, :], np.radians(source_dec)[None, :])
        alert, source = np.nonzero(sep <= radius[None, :])
        pairs.update(zip((alert + start).tolist(), source.tolist()))
    return pairs


def index_pairs(index, alert_ra, alert_dec) -> set[tuple[int, int]]:
    alert, row = index.match(np.asarray(alert_ra), np.asarray(alert_dec))
    source = index.table.column("source_row").to_numpy()[row]
    assert len(set(zip(alert.tolist(), source.tolist()))) == len(alert), "a pair was returned twice"
    return set(zip(alert.tolist(), source.tolist()))


def scatter_around(rng, ra, dec, radius_deg, per_point):
    """Alerts uniformly in a disc of 2 x radius around each (ra, dec): inside and outside it."""
    n = len(ra) * per_point
    distance = np.radians(2 * radius_deg) * np.sqrt(rng.uniform(0, 1, n))
    bearing = rng.uniform(0, 2 * np.pi, n)
    lat0, lon0 = np.radians(np.repeat(dec, per_point)), np.radians(np.repeat(ra, per_point))
    lat = np.arcsin(np.sin(lat0) * np.cos(distance) + np.cos(lat0) * np.sin(distance) * np.cos(bearing))
    lon = lon0 + np.arctan2(np.sin(bearing) * np.sin(distance) * np.cos(lat0),
                            np.cos(distance) - np.sin(lat0) * np.sin(lat))
    return np.mod(np.degrees(lon), 360.0), np.clip(np.degrees(lat), -90.0, 90.0)


# --------------------------------------------------------------------------------------------
# The geometry


def ring_clearance(depth: int, step: int = 12) -> float:
    """Smallest distance (radians) from a cell to the cells just outside its 8 neighbours, over
    every cell of `depth`, from points sampled along the cell edges (`step` per edge)."""
    from cdshealpix import nested

    cells = np.arange(12 * 4**depth, dtype=np.uint64)
    lon, lat = nested.vertices(cells, depth, step=step)
    lon, lat = np.radians(lon.to_value("deg")), np.radians(lat.to_value("deg"))
    points = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)
    neighbours = nested.neighbours(cells, depth)
    worst = math.inf
    for cell in range(len(cells)):
        block = {int(c) for c in neighbours[cell] if c >= 0}
        ring = {int(c) for b in block for c in neighbours[b] if c >= 0} - block
        outside = points[sorted(ring)].reshape(-1, 3)
        worst = min(worst, float(np.arccos(np.clip(points[cell] @ outside.T, -1, 1).max())))
    return worst


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4])
def test_a_cell_and_its_neighbours_hold_every_point_within_the_clearance(depth):
    clearance = ring_clearance(depth)
    # the sampled edges can overstate the true distance by at most half a sample step
    sampling = mean_cell_size(depth) / 12
    assert clearance - sampling >= CLEARANCE_FRACTION * mean_cell_size(depth), (
        f"depth {depth}: clearance {clearance / mean_cell_size(depth):.3f} x cell size")


def test_depth_for_radius_uses_the_deepest_safe_depth():
    for radius_arcsec in (0.01, 1.5, 30.0, 3600.0):
        radius = math.radians(radius_arcsec / 3600)
        depth = int(depth_for_radius(radius))
        assert CLEARANCE_FRACTION * mean_cell_size(depth) >= radius
        assert depth == 29 or CLEARANCE_FRACTION * mean_cell_size(depth + 1) < radius


# --------------------------------------------------------------------------------------------
# The index against the brute force, where indexes break


def _compare(rng, source_ra, source_dec, radius_arcsec, per_point=40, extra_alerts=2000):
    source_ra, source_dec = np.asarray(source_ra, float), np.asarray(source_dec, float)
    radius = np.broadcast_to(np.asarray(radius_arcsec, dtype=float), source_ra.shape)
    alert_ra, alert_dec = scatter_around(rng, source_ra, source_dec, radius.max() * ARCSEC, per_point)
    alert_ra = np.r_[alert_ra, rng.uniform(0, 360, extra_alerts)]
    alert_dec = np.r_[alert_dec, np.degrees(np.arcsin(rng.uniform(-1, 1, extra_alerts)))]
    index = build_index(source_ra, source_dec, radius, pa.array(np.arange(len(source_ra))))
    expected = brute_force_pairs(alert_ra, alert_dec, source_ra, source_dec, radius)
    got = index_pairs(index, alert_ra, alert_dec)
    assert got == expected, f"missing {len(expected - got)}, extra {len(got - expected)}"
    return len(expected)


def test_pairs_across_ra_zero():
    rng = np.random.default_rng(1)
    dec = np.r_[np.linspace(-85, 85, 35), 0.0, 0.0]
    ra = np.r_[np.where(np.arange(35) % 2, 359.99999, 0.00001), 0.0, 359.9999999]
    assert _compare(rng, ra, dec, 5.0) > 300  # a quarter of the 40 alerts scattered per source


def test_pairs_at_and_near_both_poles():
    rng = np.random.default_rng(2)
    dec = np.array([90.0, -90.0, 89.9999, -89.9999, 89.999, -89.999, 89.99, -89.99])
    ra = np.array([0.0, 123.0, 10.0, 190.0, 359.9, 0.1, 270.0, 45.0])
    assert _compare(rng, ra, dec, 20.0) > 200


@pytest.mark.parametrize("radius_arcsec", [1.5, 60.0])
def test_pairs_on_cell_edges_and_vertices_of_the_index_depth(radius_arcsec):
    from cdshealpix import nested

    rng = np.random.default_rng(3)
    depth = int(depth_for_radius(math.radians(radius_arcsec / 3600)))
    cells = rng.choice(12 * 4**depth, 30, replace=False).astype(np.uint64)
    lon, lat = nested.vertices(cells, depth, step=3)  # vertices and points along the edges
    ra, dec = lon.to_value("deg").ravel(), lat.to_value("deg").ravel()
    assert _compare(rng, ra, dec, radius_arcsec, per_point=10) > 100


def test_pairs_where_only_three_base_cells_meet():
    # the 8 points where a cell has 7 neighbours: latitude +-asin(2/3), RA 0, 90, 180, 270
    rng = np.random.default_rng(4)
    lat = math.degrees(math.asin(2 / 3))
    ra = np.array([0.0, 90.0, 180.0, 270.0] * 2)
    dec = np.array([lat] * 4 + [-lat] * 4)
    assert _compare(rng, ra, dec, 3600.0, per_point=60) > 80
    assert _compare(rng, ra, dec, 2.0, per_point=60) > 80


def test_per_source_radii_of_several_depths():
    rng = np.random.default_rng(5)
    n = 400
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    radius = 10 ** rng.uniform(-1, 3.5, n)  # 0.1 to 3,000 arcsec: ~15 depths
    index = build_index(ra, dec, radius, pa.array(np.arange(n)))
    assert len(index.levels) >= 10
    alert_ra, alert_dec = scatter_around(rng, ra, dec, 30 * ARCSEC, 5)
    big_ra, big_dec = scatter_around(rng, ra[radius > 300], dec[radius > 300], 3000 * ARCSEC, 20)
    alert_ra, alert_dec = np.r_[alert_ra, big_ra], np.r_[alert_dec, big_dec]
    expected = brute_force_pairs(alert_ra, alert_dec, ra, dec, radius)
    assert index_pairs(index, alert_ra, alert_dec) == expected and len(expected) > 300


def test_null_positions_match_nothing_and_ids_follow_the_alerts():
    index = build_index(np.array([10.0, 10.0]), np.array([20.0, 20.0 + 1 * ARCSEC]), np.array([2.0, 2.0]),
                        pa.array(["a", "b"]))
    ids = index.matched_ids(np.array([10.0, np.nan, 200.0, 10.0]), np.array([20.0, 20.0, -5.0, 20.0 + 2.5 * ARCSEC]))
    assert ids.to_pylist() == [["a", "b"], [], [], ["b"]]


# --------------------------------------------------------------------------------------------
# Requests and plans


@pytest.fixture(scope="module")
def ztf_archive(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("crossmatch_ztf"))
    generate_archive(get_survey("ztf"), root, START, nights=2, alerts_per_night=1500, seed=17, with_cutouts=False,
                     rows_per_group=200)
    return root


@pytest.fixture
def catalog_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "catalog_indexes"
    monkeypatch.setenv(CATALOG_DIR_ENV, str(directory))
    return directory


def archive_positions(root: str, night: dt.date | None = None) -> pa.Table:
    """candid, ra, dec of every alert of the archive or of one night (read directly, not through the job)."""
    import pyarrow.dataset as ds

    from fink_pipeline.archive.layout import night_dir

    folder = night_dir(root, "ztf", night) if night else f"{root}/ztf/science"
    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    return dataset.to_table(columns={"candid": ds.field("candid"), "ra": ds.field("candidate", "ra"),
                                     "dec": ds.field("candidate", "dec")})


def write_catalog(path: Path, alerts: pa.Table, rng, on_alerts: int = 60, random: int = 200) -> pa.Table:
    """Sources on some alerts (jittered < 1"), two sources on one alert, the rest at random."""
    pick = rng.choice(alerts.num_rows, on_alerts, replace=False)
    ra = alerts["ra"].to_numpy()[pick] + rng.uniform(-0.5, 0.5, on_alerts) * ARCSEC
    dec = alerts["dec"].to_numpy()[pick] + rng.uniform(-0.5, 0.5, on_alerts) * ARCSEC
    ra, dec = np.r_[ra, ra[0] + 0.3 * ARCSEC], np.r_[dec, dec[0]]
    ra = np.r_[ra, rng.uniform(0, 360, random)]
    dec = np.r_[dec, np.degrees(np.arcsin(rng.uniform(-1, 1, random)))]
    table = pa.table({"source_id": [f"S{i:04d}" for i in range(len(ra))], "ra": np.mod(ra, 360), "dec": dec})
    pq.write_table(table, path)
    return table


def expected_pairs(alerts: pa.Table, catalog: pa.Table, radius_arcsec: float) -> set[tuple[int, str]]:
    pairs = brute_force_pairs(alerts["ra"].to_numpy(), alerts["dec"].to_numpy(), catalog["ra"].to_numpy(),
                              catalog["dec"].to_numpy(), radius_arcsec)
    candid, ids = alerts["candid"].to_pylist(), catalog["source_id"].to_pylist()
    return {(candid[a], ids[s]) for a, s in pairs}


def catalog_request(root: str, path: Path, **fields) -> TransferRequest:
    return request_from_mapping({"survey": "ztf", "start": "2024-03-01", "stop": "2024-03-02",
                                 "catalog_filename": str(path), "id_col": "source_id", "radius_arcsec": 1.5, **fields})


def test_ztf_request_with_a_catalogue_is_an_fxmatch_request(ztf_archive, tmp_path, catalog_dir):
    write_catalog(tmp_path / "sources.parquet", archive_positions(ztf_archive), np.random.default_rng(0))
    request = catalog_request(ztf_archive, tmp_path / "sources.parquet")
    assert request.content == ["objectId", "candid"]
    assert request.with_identity().topic.startswith("fxmatch_ztf_")
    plan = plan_transfer(request, ztf_archive, list_nights(ztf_archive, "ztf"))
    assert plan.content.output_names == ["objectId", "candid", "jd", "source_id"]
    assert plan.crossmatch.sources == 261 and "candidate.ra" in plan.read_fields()
    assert "source_id" not in plan.read_fields()
    # an explicit content is kept, the id column added
    light = plan_transfer(catalog_request(ztf_archive, tmp_path / "sources.parquet", content=["light"]),
                          ztf_archive, list_nights(ztf_archive, "ztf"))
    assert light.content.output_names[-1] == "source_id" and "magpsf" in light.content.output_names


@pytest.mark.parametrize("fields, message", [
    ({"id_col": "objectId"}, "id_col: 'objectId' is also the name of an alert column"),
    ({"id_col": "finkclass"}, "id_col: 'finkclass' is also the name of an alert column"),
    ({"radius_arcsec": None}, "give the match radius"),
    ({"radius_col": "r"}, "not both"),
    ({"radius_arcsec": -1.0}, "is not a match radius"),
    ({"radius_arcsec": 7200.0}, "is not a match radius"),
    ({"catalog_filename": None}, "radius_arcsec is given without a catalogue"),
    ({"catalog_filename": "x" * 5000}, "at most 4096 for a path"),
    ({"id_col": "source id"}, "cannot name the published id column"),
    ({"id_col": "a.b"}, "cannot name the published id column"),
    ({"id_col": "1st"}, "cannot name the published id column"),
    ({"id_col": "x`; DROP"}, "cannot name the published id column"),
])
def test_bad_catalogue_requests_name_the_field(ztf_archive, tmp_path, catalog_dir, fields, message):
    catalog = tmp_path / "sources.parquet"
    pq.write_table(pa.table({"objectId": ["a"], "finkclass": ["b"], "ra": [1.0], "dec": [2.0], "r": [1.0]}), catalog)
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        request = catalog_request(ztf_archive, catalog, **fields)
        plan_transfer(request, ztf_archive, list_nights(ztf_archive, "ztf"))


def test_submitted_request_keeps_its_catalogue(ztf_archive, tmp_path, catalog_dir):
    path = tmp_path / "sources.parquet"
    write_catalog(path, archive_positions(ztf_archive), np.random.default_rng(1))
    nights = list_nights(ztf_archive, "ztf")
    first = plan_transfer(catalog_request(ztf_archive, path), ztf_archive, nights)
    submitted = TransferRequest.model_validate_json(
        pin_catalog(catalog_request(ztf_archive, path), first).with_identity().model_dump_json())
    assert submitted.catalog_sha256 == first.crossmatch.sha256
    # the user edits the file after submitting: the run still matches the submitted sources
    write_catalog(path, archive_positions(ztf_archive), np.random.default_rng(2))
    rerun = plan_transfer(submitted, ztf_archive, nights)
    assert rerun.crossmatch.index_path == first.crossmatch.index_path
    assert plan_transfer(catalog_request(ztf_archive, path), ztf_archive,
                         nights).crossmatch.sha256 != first.crossmatch.sha256
    # the stored index is lost as well: a clear error, never other sources
    Path(first.crossmatch.index_path).unlink()
    with pytest.raises(CatalogError, match="changed since the request was submitted"):
        plan_transfer(submitted, ztf_archive, nights)
    path.unlink()
    with pytest.raises(CatalogError, match="is no longer there"):
        plan_transfer(submitted, ztf_archive, nights)


def test_portal_yaml_catalogue_is_found_next_to_the_file(ztf_archive, tmp_path, catalog_dir):
    from fink_pipeline.transfer.request import load_request_file

    folder = tmp_path / "exports"
    folder.mkdir()
    write_catalog(folder / "my_sources.parquet", archive_positions(ztf_archive), np.random.default_rng(3))
    (folder / "datatransfer.yml").write_text(
        "dates: {startdate: '2024-03-01', stopdate: '2024-03-02'}\ncatalog_filename: my_sources.parquet\n"
        "id_col: source_id\nradius_arcsec: 2\n")
    request = load_request_file(folder / "datatransfer.yml")
    assert request.catalog_filename == str(folder / "my_sources.parquet")
    assert plan_transfer(request, ztf_archive, list_nights(ztf_archive, "ztf")).crossmatch.sources == 261


# --------------------------------------------------------------------------------------------
# Spark


@pytest.mark.spark
def test_spark_pairs_and_both_publication_paths_equal_the_brute_force(spark, ztf_archive, tmp_path, catalog_dir):
    from fink_pipeline.avro.schema import avro_schema_from_arrow
    from fink_pipeline.avro.encode import encode_batch
    from fink_pipeline.transfer.select import build_publication, build_transfer_dataframe

    alerts = archive_positions(ztf_archive)
    catalog = write_catalog(tmp_path / "sources.parquet", alerts, np.random.default_rng(4))
    expected = expected_pairs(alerts, catalog, 1.5)
    assert len(expected) >= 61  # every source on an alert, and the alert with two sources
    plan = plan_transfer(catalog_request(ztf_archive, tmp_path / "sources.parquet", content=["light"]),
                         ztf_archive, list_nights(ztf_archive, "ztf"))
    spark_rows = build_transfer_dataframe(spark, plan).toArrow()
    assert set(zip(spark_rows["candid"].to_pylist(), spark_rows["source_id"].to_pylist())) == expected
    assert spark_rows.num_rows == len(expected)

    publication = build_publication(spark, plan)
    content = publication.arrow_content
    assert content is not None and "source_id" in content.carried
    selection = publication.rows.toArrow()
    got = pa.Table.from_batches(list(content.stream(selection.to_batches(max_chunksize=7))),
                                schema=content.output_schema)
    assert got.schema.names == spark_rows.schema.names
    avro_schema = avro_schema_from_arrow(content.output_schema)

    def by_pair(table):
        return dict(zip(zip(table["candid"].to_pylist(), table["source_id"].to_pylist()),
                        encode_batch(table, avro_schema).to_pylist()))

    ours, theirs = by_pair(got), by_pair(spark_rows)
    assert got.num_rows == len(ours) == len(expected) and ours == theirs


@pytest.mark.spark
def test_catalogue_with_classes_conditions_and_limit(spark, ztf_archive, tmp_path, catalog_dir):
    from fink_pipeline.transfer.select import build_transfer_dataframe

    alerts = archive_positions(ztf_archive)
    catalog = write_catalog(tmp_path / "sources.parquet", alerts, np.random.default_rng(5), on_alerts=300)
    expected = expected_pairs(alerts, catalog, 1.5)
    bright = catalog_request(ztf_archive, tmp_path / "sources.parquet", conditions=["candidate.magpsf < 19"],
                             content=["candid", "candidate.magpsf"])
    nights = list_nights(ztf_archive, "ztf")
    rows = build_transfer_dataframe(spark, plan_transfer(bright, ztf_archive, nights)).toArrow()
    assert 0 < rows.num_rows < len(expected)
    assert max(rows["magpsf"].to_pylist()) < 19
    assert set(zip(rows["candid"].to_pylist(), rows["source_id"].to_pylist())) <= expected
    limited = catalog_request(ztf_archive, tmp_path / "sources.parquet", limit=7)
    first = build_transfer_dataframe(spark, plan_transfer(limited, ztf_archive, list_nights(ztf_archive, "ztf")))
    pairs = [(r["candid"], r["source_id"]) for r in first.collect()]
    assert pairs == sorted(expected)[:7]


@pytest.mark.spark
def test_arrow_content_repeats_a_row_as_often_as_it_is_selected(spark, ztf_archive, tmp_path, catalog_dir):
    """An alert matching many sources is selected many times: as many selections of one row as
    a slice of its row group has rows must not read as 'the whole slice'."""
    from fink_pipeline.transfer.arrow_content import FILE_COLUMN, ROW_COLUMN
    from fink_pipeline.transfer.select import build_publication

    alerts = archive_positions(ztf_archive)
    write_catalog(tmp_path / "sources.parquet", alerts, np.random.default_rng(6))
    plan = plan_transfer(catalog_request(ztf_archive, tmp_path / "sources.parquet", content=["candid", "objectId"]),
                         ztf_archive, list_nights(ztf_archive, "ztf"))
    content = build_publication(spark, plan).arrow_content
    first = sorted(list_nights(ztf_archive, "ztf"))[0]
    file = sorted(plan.footers[first])[0]
    group_rows = pq.ParquetFile(file).metadata.row_group(0).num_rows
    selection = pa.table({FILE_COLUMN: ["file://" + file] * group_rows, ROW_COLUMN: [3] * group_rows,
                          "source_id": [f"S{i}" for i in range(group_rows)]})
    got = pa.Table.from_batches(list(content.stream(selection.to_batches())))
    row3 = pq.read_table(file, columns=["candid"])["candid"][3].as_py()
    assert got["candid"].to_pylist() == [row3] * group_rows
    assert sorted(got["source_id"].to_pylist()) == sorted(f"S{i}" for i in range(group_rows))


def test_standing_request_with_a_catalogue_is_pinned_by_its_first_step(ztf_archive, tmp_path, catalog_dir):
    """A nightly replay stores its request without the catalogue's hash (the sensor does not read
    catalogues); the run's first step pins it, so later steps and retries use those sources."""
    import dagster as dg

    from fink_pipeline.orchestration.assets.transfer import transfer_request
    from fink_pipeline.orchestration.resources import ArchiveResource, RequestStoreResource, SparkResource
    from fink_pipeline.transfer.standing import standing_from_mapping
    from fink_pipeline.transfer.store import RequestStore

    path = tmp_path / "targets.parquet"
    catalog = write_catalog(path, archive_positions(ztf_archive), np.random.default_rng(7))
    standing = standing_from_mapping("targets", {"survey": "ztf", "catalog_filename": str(path),
                                                 "id_col": "source_id", "radius_arcsec": 1.5})
    request = standing.for_night(START)
    assert request.topic == "fxmatch_ztf_2024-03-01_targets" and request.catalog_sha256 is None
    store = RequestStore(tmp_path / "requests")
    store.save(request)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("transfer_requests", [request.topic])
        result = dg.materialize([transfer_request], partition_key=request.topic, instance=instance, resources={
            "spark": SparkResource(master="local[2]"), "archive": ArchiveResource(root=ztf_archive),
            "requests": RequestStoreResource(root=str(tmp_path / "requests"))})
    assert result.success
    pinned = store.load(request.topic).catalog_sha256
    metadata = result.asset_materializations_for_node("transfer_request")[0].metadata
    assert pinned is not None and metadata["catalog_sha256"].value == pinned
    first_night = archive_positions(ztf_archive, START)
    assert metadata["catalog_pairs"].value == len(expected_pairs(first_night, catalog, 1.5)) > 10


@pytest.mark.parametrize("survey, position", [("lsst", ("diaSource", "ra", "dec")),
                                              ("elasticc", ("diaSource", "ra", "decl"))])
def test_estimate_counts_the_pairs_of_every_survey_exactly(tmp_path, catalog_dir, survey, position):
    """The estimate matches every alert's position (Rubin diaSource.ra/dec, ELAsTiCC
    diaSource.ra/decl) with the job's index: the brute-force count, before any Spark."""
    import pyarrow.dataset as ds

    from fink_pipeline.transfer.estimate import estimate_request

    root = str(tmp_path / "archive")
    night = max(START, get_survey(survey).first_night)
    generate_archive(get_survey(survey), root, night, nights=1, alerts_per_night=800, seed=3, with_cutouts=False)
    struct, ra_field, dec_field = position
    alerts = ds.dataset(f"{root}/{survey}/science", format="parquet", partitioning="hive").to_table(
        columns={"ra": ds.field(struct, ra_field), "dec": ds.field(struct, dec_field)})
    rng = np.random.default_rng(8)
    pick = rng.choice(alerts.num_rows, 40, replace=False)
    catalog = pa.table({"source_id": np.arange(140),
                        "ra": np.r_[alerts["ra"].to_numpy()[pick], rng.uniform(0, 360, 100)],
                        "dec": np.r_[alerts["dec"].to_numpy()[pick], rng.uniform(-60, 20, 100)]})
    pq.write_table(catalog, tmp_path / "sources.parquet")
    request = request_from_mapping({"survey": survey, "start": night.isoformat(), "stop": night.isoformat(),
                                    "catalog_filename": str(tmp_path / "sources.parquet"), "id_col": "source_id",
                                    "radius_arcsec": 1.0})
    estimate = estimate_request(request, root)
    expected = brute_force_pairs(alerts["ra"].to_numpy(), alerts["dec"].to_numpy(), catalog["ra"].to_numpy(),
                                 catalog["dec"].to_numpy(), 1.0)
    assert sum(estimate.catalog_pairs.values()) == estimate.total.alerts == len(expected) >= 40
    assert estimate.exact and estimate.as_metadata()["catalog_pairs"] == len(expected)
