"""Footer summaries (`archive.footers`) in place of pyarrow FileMetaData: the same byte counts,
row counts and sample rows as computed from the full footers, with no footer kept alive."""

from __future__ import annotations

import datetime as dt
import gc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive.footers import FooterSchema
from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.archive.stats import night_footers, night_row_count
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.metrics import footer_input_bytes, footers_input_bytes, parquet_leaf_paths
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.request import request_from_mapping
from fink_pipeline.transfer.sample import _sample_indices, read_sample

ZTF = get_survey("ztf")
START = dt.date(2024, 3, 1)
NIGHTS = [START, START + dt.timedelta(days=1)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    """Two nights of several files of several row groups; the second night's files lack the
    `mangrove` column (a second Parquet schema)."""
    root = str(tmp_path_factory.mktemp("footers") / "archive")
    generate_archive(ZTF, root, START, nights=2, alerts_per_night=500, seed=5, with_cutouts=False,
                     rows_per_group=40, max_file_bytes=600_000)
    for path in night_footers(root, "ztf", NIGHTS[1]):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["mangrove"]), path, row_group_size=40)
    return root


def _metadata(path: str) -> pq.FileMetaData:
    return pq.ParquetFile(path).metadata


def _reference_bytes(paths, fields) -> tuple[int, int, int, int]:
    """(bytes, rows, files, columns) straight from each file's FileMetaData (the code the
    summaries replaced)."""
    total = rows = columns = 0
    for path in paths:
        meta = _metadata(path)
        rows += meta.num_rows
        schema = meta.schema
        leaves = [schema.column(i).path for i in range(len(schema))]
        if fields is None:
            indices = range(meta.num_columns)
        else:
            wanted = set(parquet_leaf_paths(FooterSchema(schema, tuple(leaves)), fields))
            indices = [i for i, leaf in enumerate(leaves) if leaf in wanted]
        for g in range(meta.num_row_groups):
            total += sum(meta.row_group(g).column(c).total_compressed_size for c in indices)
            columns += len(indices) if g == 0 else 0
    return total, rows, len(paths), columns


def _reference_sample(paths, night, fields, size, seed, one_group) -> tuple[pa.Table, int]:
    """The rows `read_sample` must return, read from each file with its full footer."""
    files = [pq.ParquetFile(path) for path in paths]
    groups = [(f, g, f.metadata.row_group(g).num_rows) for f in files for g in range(f.num_row_groups)]
    total = sum(n for _, _, n in groups)
    leaves = {id(f): parquet_leaf_paths(_footer_schema(f), fields) for f in files}
    if one_group:
        filled = [group for group in groups if group[2]]
        rng = np.random.default_rng([seed, night.toordinal()])
        f, g, _ = filled[int(rng.integers(len(filled)))]
        table = f.read_row_group(g, columns=leaves[id(f)]).slice(0, size)
    else:
        wanted = _sample_indices(total, size, seed, night)
        pieces, start = [], 0
        for f, g, n in groups:
            lo, hi = np.searchsorted(wanted, [start, start + n])
            if hi > lo:
                pieces.append(f.read_row_group(g, columns=leaves[id(f)]).take(pa.array(wanted[lo:hi] - start)))
            start += n
        table = pa.concat_tables(pieces, promote_options="permissive")
    for name, value in zip(("year", "month", "day"), (night.year, night.month, night.day)):
        table = table.append_column(name, pa.array([value] * table.num_rows, pa.int32()))
    return table, total


def _footer_schema(parquet_file: pq.ParquetFile) -> FooterSchema:
    schema = parquet_file.schema
    return FooterSchema(schema, tuple(schema.column(i).path for i in range(len(schema))))


def test_summaries_hold_the_footers_figures_and_share_one_schema_per_kind_of_file(archive) -> None:
    schemas = []
    for night in NIGHTS:
        summaries = night_footers(archive, "ztf", night)
        assert len(summaries) > 1 and night_row_count(archive, "ztf", night) == 500
        for path, summary in summaries.items():
            meta = _metadata(path)
            assert summary.path == path and summary.num_rows == meta.num_rows
            assert summary.row_group_rows.tolist() == [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            assert summary.leaf_bytes.tolist() == [
                sum(meta.row_group(g).column(c).total_compressed_size for g in range(meta.num_row_groups))
                for c in range(meta.num_columns)]
            assert summary.schema.parquet.equals(meta.schema)
            assert summary.schema.arrow.equals(meta.schema.to_arrow_schema())
        assert len({id(s.schema) for s in summaries.values()}) == 1
        schemas.append(next(iter(summaries.values())).schema)
    assert schemas[0] is not schemas[1]
    assert max(s.row_group_rows.size for n in NIGHTS for s in night_footers(archive, "ztf", n).values()) > 1


@pytest.mark.parametrize("content", [["light"], ["full"], ["candid", "mangrove.HyperLEDA_name", "prv_candidates"]])
def test_footer_bytes_are_those_of_the_full_footers(archive, content) -> None:
    request = request_from_mapping({"start": START.isoformat(), "stop": NIGHTS[-1].isoformat(), "content": content})
    plan = plan_transfer(request, archive, list_nights(archive, "ztf"))
    paths = [path for night in NIGHTS for path in plan.footers[night]]
    for fields in (plan.read_fields(), None, ["mangrove.HyperLEDA_name", "candidate"], ["absent.field"]):
        expected = _reference_bytes(paths, fields)
        summaries = [summary for night in NIGHTS for summary in plan.footers[night].values()]
        for got in (footers_input_bytes(summaries, fields), footer_input_bytes(paths, fields)):
            assert (got.bytes, got.rows, got.files, got.columns) == expected
    footer = plan.footer_input_bytes()
    assert (footer.bytes, footer.rows, footer.files, footer.columns) == _reference_bytes(paths, plan.read_fields())


@pytest.mark.parametrize("one_group", [False, True])
@pytest.mark.parametrize("size", [1, 37, 250, 10_000])
def test_sample_rows_are_those_read_with_the_full_footers(archive, one_group, size) -> None:
    fields = ["objectId", "candidate.magpsf", "candidate.jd", "mangrove", "prv_candidates.fid"]
    for night in NIGHTS:
        paths = list(night_footers(archive, "ztf", night))
        expected, expected_total = _reference_sample(paths, night, fields, size, 7, one_group)
        for footers in (None, night_footers(archive, "ztf", night)):
            sample, total = read_sample(archive, ZTF, night, fields, size, seed=7, footers=footers,
                                        one_group=one_group)
            assert total == expected_total == 500
            assert sample.equals(expected, check_metadata=True)


def test_summarizing_keeps_no_footer_alive(tmp_path) -> None:
    """Not even until the next garbage collection: the footer a ParquetSchema refers back to
    would form a cycle (100 MiB of heap for 400 ZTF files)."""
    root = str(tmp_path / "archive")
    generate_archive(ZTF, root, START, nights=1, alerts_per_night=300, seed=6, with_cutouts=False,
                     rows_per_group=40, max_file_bytes=300_000)
    gc.collect()
    gc.disable()
    try:
        # footers other tests' summaries hold (one per schema, in the process cache)
        before = {id(o) for o in gc.get_objects() if isinstance(o, pq.FileMetaData)}
        summaries = night_footers(root, "ztf", START)
        alive = [o for o in gc.get_objects() if isinstance(o, pq.FileMetaData) and id(o) not in before]
    finally:
        gc.enable()
    assert len(summaries) > 2
    assert len(alive) <= 1  # the representative of the night's one schema


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[p].num_rows == b[p].num_rows and np.array_equal(a[p].row_group_rows, b[p].row_group_rows)
        and np.array_equal(a[p].leaf_bytes, b[p].leaf_bytes) and a[p].schema.parquet.equals(b[p].schema.parquet)
        and a[p].schema.leaf_paths == b[p].schema.leaf_paths for p in a)


def test_footer_summaries_are_kept_for_the_next_command(tmp_path, monkeypatch) -> None:
    # a later command (here: the process cache emptied) reads one footer per schema, not one per
    # file, and gets the same summaries; a rewritten, added or removed file is seen; a damaged
    # cache file or a cache folder that cannot be written costs only the reading
    from fink_pipeline.archive import stats, stored_footers

    monkeypatch.setenv("FINK_PIPELINE_CACHE", str(tmp_path / "cache"))
    root = str(tmp_path / "archive")
    generate_archive(ZTF, root, START, nights=1, alerts_per_night=600, seed=8, with_cutouts=False,
                     rows_per_group=40, max_file_bytes=300_000)
    reads: list[str] = []
    real_read = stats.read_footer

    def counted(fs, path):
        reads.append(path)
        return real_read(fs, path)

    monkeypatch.setattr(stats, "read_footer", counted)
    monkeypatch.setattr(stored_footers, "read_footer", counted)

    def footers_of_a_new_command() -> dict:
        stats._FOOTER_CACHE.clear()
        reads.clear()
        return night_footers(root, "ztf", START)

    first = footers_of_a_new_command()
    assert len(first) > 3 and len(reads) == len(first)
    again = footers_of_a_new_command()
    assert len(reads) == 1 and _same(again, first)

    paths = sorted(first)
    table = pq.read_table(paths[1])
    kept_rows = table.num_rows // 2
    pq.write_table(table.slice(0, kept_rows), paths[1], row_group_size=40)  # rewritten, fewer rows
    pq.write_table(table.slice(0, 30), paths[0][:-8] + "-added.parquet")
    Path(paths[2]).unlink()
    changed = footers_of_a_new_command()
    assert changed[paths[1]].num_rows == kept_rows < table.num_rows and paths[2] not in changed
    assert changed[paths[0][:-8] + "-added.parquet"].num_rows == 30
    assert paths[1] in reads and len(reads) <= 3  # the changed files (and one for the schema)
    assert _same(footers_of_a_new_command(), changed) and len(reads) == 1

    for cache in (tmp_path / "cache" / "footers").glob("*.parquet"):
        cache.write_bytes(b"PAR1 damaged")
    assert _same(footers_of_a_new_command(), changed) and len(reads) == len(changed)
    assert _same(footers_of_a_new_command(), changed) and len(reads) == 1  # written again

    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("FINK_PIPELINE_CACHE", str(tmp_path / "not-a-folder"))
    assert _same(footers_of_a_new_command(), changed) and len(reads) == len(changed)
