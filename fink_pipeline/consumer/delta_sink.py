"""Delta: each append carries one Delta transaction identifier per Kafka partition it contains
(`app_id` = `<topic>:<publication id>:<partition>`, `version` = next offset to read); the
table's description records its publication. The data files and the offsets land in the same
commit, so after a crash at any point the table's own log says where to resume: nothing is
lost and nothing is written twice. Before each commit the sink checks, in
the snapshot the commit is based on, that every partition's offset is still the one the batch
started from; delta-rs then rejects the commit if a concurrent commit carries one of its
`app_id`s (ConcurrentTransaction). Two consumers started on the same table by mistake therefore
cannot both append the same messages: the late one stops with `ConcurrentConsumerError`.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from fink_pipeline.consumer.partitioning import Partitioning
from fink_pipeline.storage import explain_storage_error, missing_credentials_error
from fink_pipeline.consumer.sinks import (
    ConcurrentConsumerError,
    DiskFullError,
    Publication,
    is_disk_full,
    publication_mismatch,
)

# claims of one table tried at most this often while other consumers commit to it
CLAIM_ATTEMPTS = 5

# Delta file statistics (data skipping) on the first 8 leaf columns only: the default 32 reach
# deep into nested alert records and double the write time of full packets.
INDEXED_LEAF_COLUMNS = 8
DELTA_TABLE_CONFIGURATION = {"delta.dataSkippingNumIndexedCols": str(INDEXED_LEAF_COLUMNS)}


def leaf_column_paths(schema: pa.Schema) -> list[str]:
    """Dotted paths of the leaf columns of `schema`, in Parquet order (struct fields expanded;
    a list or map is one leaf here: its items never carry Delta statistics)."""
    paths: list[str] = []

    def visit(prefix: str, dtype: pa.DataType) -> None:
        if pa.types.is_struct(dtype):
            for child in dtype:
                visit(f"{prefix}.{child.name}", child.type)
        else:
            paths.append(prefix)

    for f in schema:
        visit(f.name, f.type)
    return paths


def _delta_writer_properties(schema: pa.Schema, partition_columns: Sequence[str]):
    """Parquet settings of Delta data files: no dictionary encoding (alert columns are mostly
    distinct floats; dictionary attempts cost 2-3x the write time); column-chunk statistics
    (not per page) only on the leaf columns the Delta log indexes (the only ones it reads;
    the others cost write time for nothing); LZ4_RAW compression (as small as snappy for alerts and
    cheaper to write with delta-rs; read by pyarrow, polars, delta-rs, duckdb and Spark >= 3.4)."""
    from deltalake import ColumnProperties, WriterProperties

    data_leaves = [p for p in leaf_column_paths(schema) if p.split(".")[0] not in partition_columns]
    indexed = ColumnProperties(dictionary_enabled=False, statistics_enabled="CHUNK")
    return WriterProperties(
        compression="LZ4_RAW",
        default_column_properties=ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE"),
        column_properties={path: indexed for path in data_leaves[:INDEXED_LEAF_COLUMNS]})


class DeltaSink:
    """Append to a Delta table; Kafka offsets are Delta transaction identifiers."""

    def __init__(self, uri: str, partitioning: Partitioning,
                 storage_options: dict[str, str] | None = None, max_commit_retries: int = 100,
                 settings: tuple[str, str] = ("FINK_TABLE_ROOT", "FINK_TABLE_STORAGE_OPTIONS")) -> None:
        self.uri = str(uri)
        self.partitioning = partitioning
        self.storage_options = storage_options
        # where the location and its options were configured, for error messages
        self.settings = settings
        self.max_commit_retries = max_commit_retries
        self.publication: Publication | None = None
        self._table = None
        self._writer_properties = None  # built for the first batch's schema (one per table)

    @property
    def location(self) -> str:
        return self.uri

    def app_id(self, partition: int) -> str:
        """Transaction id of `partition`'s offset: keyed on the publication, not the group."""
        if self.publication is None:
            raise RuntimeError(f"{self.uri}: claim() the publication before reading or writing offsets")
        return f"{self.publication.key}:{partition}"

    def held_publication(self) -> Publication | None:
        """The publication recorded in the table (None: no table, or none recorded)."""
        table = self._snapshot()
        return None if table is None else Publication.from_json(table.metadata().description)

    def claim(self, publication: Publication, replace_other: bool = False) -> None:
        """Record `publication` in a table holding no rows yet; refuse a table holding another,
        or with `replace_other` (a table the caller owns entirely, such as the pipeline's)
        delete its rows first: the table restarts cleanly with this publication.

        A table without rows may change hands: its offsets are keyed on the publication, so
        offsets of another one (all its messages undecodable) are never read as this one's.
        A crash between the delete and the new record leaves an empty table: claimed again
        on the next run.
        """
        from deltalake.exceptions import CommitFailedError

        for attempt in range(CLAIM_ATTEMPTS):
            table = self._snapshot()
            if table is None:
                raise RuntimeError(f"{self.uri}: prepare() the table before claiming it")
            held = Publication.from_json(table.metadata().description)
            if held == publication:
                break
            try:
                if table.file_uris():
                    if not replace_other:
                        raise publication_mismatch(self.uri, held, publication)
                    table.delete()  # one commit removing every row of the other publication
                table.alter.set_table_description(publication.to_json())
                break
            except CommitFailedError:
                # another consumer committed since our snapshot (two started together on a
                # new table both record the publication): look at the table again
                self._table = None
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise
        self.publication = publication

    def _snapshot(self):
        """The table at its latest version (None: no table): loaded once per sink, then brought
        up to date from the log's new commits only."""
        if self._table is None:
            self._table = self._load()
        else:
            self._table.update_incremental()
        return self._table

    def _load(self):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if (missing := missing_credentials_error(self.uri, self.storage_options, self.settings[1])) is not None:
            raise missing
        try:
            return DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        except OSError as exc:  # an object store that cannot be reached as configured
            raise self._explained(exc) from None

    def _explained(self, exc: BaseException) -> BaseException:
        """The StorageError naming the setting to fix, or `exc` itself when it is not one."""
        explained = explain_storage_error(exc, self.uri, self.storage_options, *self.settings)
        return explained if explained is not None else exc

    def prepare(self, schema: pa.Schema) -> None:
        """Create the (empty) table with the output schema and partition columns, once.

        Parallel consumers may race to create it: the loser finds it created and goes on.
        """
        from deltalake import DeltaTable

        self.partitioning.check(schema)
        if self._snapshot() is not None:
            return
        try:
            DeltaTable.create(self.uri, schema=self.partitioning.output_schema(schema),
                              partition_by=self.partitioning.columns or None, mode="ignore",
                              configuration=DELTA_TABLE_CONFIGURATION, storage_options=self.storage_options)
        except Exception as exc:
            if self._snapshot() is None:
                if (explained := self._explained(exc)) is not exc:
                    raise explained from None
                raise

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Next offset to read for each partition, from the table's transaction log."""
        self._snapshot()
        return {p: self._committed(p) for p in partitions}

    def _committed(self, partition: int) -> int:
        version = self._table.transaction_version(self.app_id(partition)) if self._table is not None else None
        return int(version) if version is not None else 0

    def write(self, table: pa.Table, next_offsets: dict[int, int], start_offsets: dict[int, int]) -> None:
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        table = self.partitioning.apply(table)
        if self._table is None:
            self.prepare(table.schema)
        if self._writer_properties is None:
            self._writer_properties = _delta_writer_properties(table.schema, self.partitioning.columns)
        self._snapshot()
        # The commit below is based on this snapshot: if it still holds our start offsets, any
        # other writer of these partitions commits after it and delta-rs rejects our commit.
        committed = {p: self._committed(p) for p in next_offsets}
        moved = {p: v for p, v in committed.items() if v != start_offsets[p]}
        if moved:
            raise ConcurrentConsumerError(self._conflict_message(moved, start_offsets))
        transactions = [Transaction(app_id=self.app_id(p), version=int(o)) for p, o in sorted(next_offsets.items())]
        try:
            write_deltalake(
                self._table, table, mode="append",
                partition_by=self.partitioning.columns or None,
                writer_properties=self._writer_properties,
                commit_properties=CommitProperties(app_transactions=transactions,
                                                   max_commit_retries=self.max_commit_retries),
            )
        except Exception as exc:
            if isinstance(exc, CommitFailedError) and "Concurrent transaction" in str(exc):
                raise ConcurrentConsumerError(
                    f"{self.uri}: another consumer committed offsets of partitions {sorted(next_offsets)} "
                    "while this one was writing them; this batch was not committed. Run only one "
                    "fink_datatransfer per topic and output folder."
                ) from exc
            # delta-rs reports a full disk as "Failed to parse parquet: ... (os error 28)": say
            # what happened instead (data files without a commit are not part of the table)
            if is_disk_full(exc):
                raise DiskFullError(self.uri) from None
            if (explained := self._explained(exc)) is not exc:
                raise explained from None
            raise

    def _conflict_message(self, moved: dict[int, int], start: dict[int, int]) -> str:
        detail = ", ".join(f"partition {p}: table at {v}, this consumer at {start[p]}" for p, v in sorted(moved.items()))
        return (f"{self.uri}: another consumer is writing the same topic partitions into this table ({detail}). "
                "Stopped without writing: run only one fink_datatransfer per topic and output folder "
                "(the table stays exact; rerun the command once the other one is done to resume).")

    def close(self) -> None:
        self._table = None
