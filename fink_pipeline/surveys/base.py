"""What the pipeline needs to know about a survey; one `Survey` per module in this package."""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Literal, Mapping, Protocol, Sequence

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.packets import Packet

if TYPE_CHECKING:  # pyspark is heavy; only the Spark-side callables need it
    from pyspark.sql import Column, DataFrame

TimeScale = Literal["jd", "mjd"]

# Julian date of the Unix epoch, and MJD = JD - 2400000.5
JD_UNIX_EPOCH = 2440587.5
MJD_UNIX_EPOCH = 40587.0


class ClassError(ValueError):
    """A class label the survey does not know (the message names it and the closest label)."""


def suggest_label(label: str, choices: Collection[str], cutoff: float = 0.6) -> str:
    """'; did you mean X?' for the closest of `choices` (case mismatches first), or ''."""
    lowered = {c.lower(): c for c in choices}
    if label.lower() in lowered:
        return f"; did you mean {lowered[label.lower()]!r}? (labels are case-sensitive)"
    match = difflib.get_close_matches(label, sorted(choices), n=1, cutoff=cutoff)
    return f"; did you mean {match[0]!r}?" if match else ""


@dataclass(frozen=True)
class SelectionFunction:
    """A Fink live-stream filter or block replayed as a native Spark expression.

    ZTF's live-stream filters and Rubin's filters and blocks share this shape: the request
    names them (`NOT name` negates one), the plan resolves them through the survey, and the
    job ANDs their columns after the extra conditions, as Fink's transfer jobs do.
    """

    name: str
    description: str
    # module.function Fink's job imports (e.g. fink_filters.rubin.blocks.b_is_new)
    fink_module: str
    # dotted archive fields the expression reads (what planning and estimates load)
    columns_read: tuple[str, ...]
    builder: Callable[[], "Column"] = field(repr=False, compare=False)
    notes: str = ""

    def column(self) -> "Column":
        """Null-free boolean Spark column: True for the alerts Fink's function keeps."""
        return self.builder()

    def apply(self, df: "DataFrame") -> "DataFrame":
        """Keep only the alerts the function selects."""
        return df.filter(self.column())


@dataclass(frozen=True)
class TnsRecompute:
    """A column the transfer job recomputes from the current TNS catalogue before the
    conditions (Fink's LSST `tns_type_recomputed`); the stored value stays without a catalogue."""

    column: str
    # dotted fields the match reads (the alert's position)
    inputs: tuple[str, ...]
    # raw catalogue (ra, declination, type) -> the prepared Arrow table `apply` takes
    prepare: Callable[[Any], pa.Table] = field(repr=False, compare=False)
    # (DataFrame, prepared catalogue) -> the DataFrame with `column` recomputed
    apply: Callable[["DataFrame", Any], "DataFrame"] = field(repr=False, compare=False)


class ClassRules(Protocol):
    """A survey's own class semantics (ZTF: `surveys/ztf/classes.py`). Surveys without one
    select on their first stored class column with the labels as written."""

    uses_tns: bool
    inputs: tuple[str, ...]

    def prepare_tns_catalog(self, catalog: Any) -> pa.Table: ...

    def needs_tns(self, classes: Sequence[str]) -> bool: ...

    def spark_filter(self, classes: Sequence[str]) -> "Column": ...

    def mask(self, values: Mapping[str, Sequence], classes: Sequence[str], n: int) -> np.ndarray: ...

    def validate(self, classes: Sequence[str], seen_labels: Collection[str],
                 tns_types: Collection[str] | None) -> list[str]: ...


@dataclass(frozen=True)
class Survey:
    """A survey's archive schema, time axis, identifiers and classification."""

    name: str
    description: str
    # Unified archive schema: every column any schema version ever had, without the
    # year/month/day partition columns (those come from the directory names).
    archive_schema: pa.Schema
    # Dotted path of the observation time and its scale (ZTF candidate.jd is a JD,
    # Rubin diaSource.midpointMjdTai and ELAsTiCC diaSource.midPointTai are MJDs).
    time_column: str
    time_scale: TimeScale
    alert_id: str
    object_id: str
    # Columns holding the classification labels the class filter and partitioning use.
    class_columns: tuple[str, ...]
    default_partitionby: str
    topic_prefix: str
    first_night: dt.date
    # Pre-defined contents by short name (Fink's "Full packet", "Light SSO packet", ...; see
    # `surveys.packets`): what a request's content may name instead of fields.
    packets: Mapping[str, Packet] = field(default_factory=dict)
    # Adds the class columns (native Spark expressions, no Python UDF).
    classify: Callable[["DataFrame"], "DataFrame"] | None = None
    # The same classification in pure Arrow, for tests and the consumer side.
    classify_arrow: Callable[[pa.Table], dict[str, pa.Array]] | None = None
    # The class columns `classify` adds as Spark types them (nullable or not), without a TNS
    # catalogue: the output schema of a transfer whose tasks classify needs no Spark analysis.
    # Tests check it against `classify`. None: Spark analyses `classify` to type them.
    class_schema: pa.Schema | None = None
    # Synthetic alerts of one night: (night, n_alerts, seed, with_cutouts) -> record batches
    # matching `archive_schema`, produced lazily so memory stays bounded at any scale.
    generate_night: Callable[..., Iterator[pa.RecordBatch]] | None = None
    # Labels a class filter may name when the classes are stored, not computed (ELAsTiCC's
    # classIds as text) -> their descriptions; empty where the survey has no fixed label set.
    class_labels: dict[str, str] = field(default_factory=dict)
    # Keys a content item or condition may read from each map column (`mangrove.HyperLEDA_name`):
    # map keys are case-sensitive and a wrong one reads null silently, so only these are accepted.
    map_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # How class labels are checked and selected; None: stored labels (see `ClassRules`).
    class_rules: ClassRules | None = None
    # Live-stream filter by name or Fink module path -> a `SelectionFunction`; None: the
    # survey has no replayable filters.
    resolve_livestream_filter: Callable[[str], SelectionFunction] | None = None
    # Every replayable live-stream filter by name (what `request filters` lists).
    livestream_filters: Mapping[str, SelectionFunction] = field(default_factory=dict)
    # Fink's building blocks (Rubin's `fink_filters.rubin.blocks.b_*`) by name; empty: none.
    blocks: Mapping[str, SelectionFunction] = field(default_factory=dict)
    # Block by name or Fink module path -> its `SelectionFunction`; None: no blocks.
    resolve_block: Callable[[str], SelectionFunction] | None = None
    # A column recomputed from the TNS catalogue at transfer time; None: none.
    tns_recompute: TnsRecompute | None = None
    # Dotted (ra, dec) fields of the alert's position in degrees: what a catalogue
    # cross-match compares; None: the survey's alerts cannot be cross-matched.
    position_fields: tuple[str, str] | None = None
    # Topic prefix of a request with a catalogue cross-match when the survey publishes those
    # under another name (Fink's ZTF Xmatch service: fxmatch_ztf); None: topic_prefix.
    crossmatch_topic_prefix: str | None = None
    extra: dict = field(default_factory=dict)

    def time_to_unix_seconds(self, values):
        """Vectorised: observation time values (numpy/Arrow float) -> Unix seconds."""
        epoch = JD_UNIX_EPOCH if self.time_scale == "jd" else MJD_UNIX_EPOCH
        return (values - epoch) * 86400.0

    def night_of(self, time_value: float) -> dt.date:
        """UTC night (calendar date) of one observation time value."""
        seconds = self.time_to_unix_seconds(time_value)
        return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).date()

    # -- classes ------------------------------------------------------------------------------

    @property
    def uses_tns(self) -> bool:
        """True when a class is computed from a TNS catalogue (ZTF's tnsclass)."""
        return self.class_rules is not None and self.class_rules.uses_tns

    @property
    def loads_tns(self) -> bool:
        """True when transfers read the archive's TNS catalogue (class rules or a recompute)."""
        return self.uses_tns or self.tns_recompute is not None

    @property
    def classification_inputs(self) -> tuple[str, ...]:
        """Dotted fields the classification reads (the only columns nightly statistics read)."""
        return self.class_rules.inputs if self.class_rules is not None else tuple(self.class_columns)

    def prepare_tns_catalog(self, catalog: Any) -> pa.Table | None:
        """The catalogue in the form the classification (or the TNS recompute) uses; None for
        surveys without TNS."""
        if catalog is None:
            return None
        if self.uses_tns:
            return self.class_rules.prepare_tns_catalog(catalog)
        return self.tns_recompute.prepare(catalog) if self.tns_recompute is not None else None

    def needs_tns(self, classes: Sequence[str]) -> bool:
        """True when `classes` select on a TNS class (empty without a catalogue)."""
        return self.class_rules is not None and self.class_rules.needs_tns(classes)

    def validate_classes(self, classes: Sequence[str], seen_labels: Collection[str] = (),
                         tns_types: Collection[str] | None = None) -> list[str]:
        """Check `classes`: ClassError naming the first unknown one, else the warnings."""
        if self.class_rules is not None:
            return self.class_rules.validate(classes, seen_labels, tns_types)
        self._validate_stored_classes(classes, seen_labels)
        return []

    def class_filter(self, classes: Sequence[str]) -> "Column":
        """Spark condition keeping the alerts of `classes` (the job's class filter)."""
        if self.class_rules is not None:
            return self.class_rules.spark_filter(classes)
        from pyspark.sql import functions as F

        return F.col(self.class_columns[0]).cast("string").isin([str(c) for c in classes])

    def class_mask(self, values: Mapping[str, Sequence], classes: Sequence[str], n: int) -> np.ndarray:
        """Which of `n` rows (class column -> values) the class filter keeps; all without classes."""
        if not classes:
            return np.ones(n, dtype=bool)
        if self.class_rules is not None:
            return self.class_rules.mask(values, classes, n)
        wanted = {str(c) for c in classes}
        return np.fromiter((v is not None and str(v) in wanted for v in values[self.class_columns[0]]), bool, n)

    def _validate_stored_classes(self, classes: Sequence[str], seen_labels: Collection[str]) -> None:
        """Classes stored with the alerts (ELAsTiCC classId) or absent (LSST): a label must be
        one of the survey's, or one the nightly statistics have seen."""
        if not self.class_columns:
            raise ClassError(
                f"classes: {self.name} alerts carry no class label (Fink's {self.name} service has no "
                "finkclass): remove classes and select with conditions instead, e.g. 'diaSource.reliability > 0.9'"
            )
        valid = set(self.class_labels) | {str(label) for label in seen_labels}
        by_name = {name.lower(): label for label, name in self.class_labels.items()}
        for label in classes:
            if str(label) in valid:
                continue
            if str(label).lower() in by_name:
                code = by_name[str(label).lower()]
                hint = f"; did you mean {code!r} ({self.class_labels[code]})?"
            else:
                hint = "; choose among " + ", ".join(f"{code} ({name})" for code, name in self.class_labels.items())
            raise ClassError(f"classes: {label!r} is not a known {self.name} {self.class_columns[0]}{hint}")

    # -- filters and blocks -------------------------------------------------------------------

    def resolve_selection(self, kind: str, name: str) -> SelectionFunction:
        """The live-stream filter (`kind` "filter") or block ("block") named `name` (short name
        or Fink module path); ValueError naming it and the closest valid names."""
        if kind == "filter":
            if self.resolve_livestream_filter is None:
                raise ValueError(f"{name!r}: {self.name} has no live-stream filters to replay; "
                                 "select with conditions instead")
            return self.resolve_livestream_filter(name)
        if self.resolve_block is None:
            raise ValueError(f"{name!r}: {self.name} has no blocks (Fink's blocks are Rubin's, survey lsst); "
                             "select with conditions instead")
        return self.resolve_block(name)

    # -- fields ---------------------------------------------------------------------------------

    @property
    def field_paths(self) -> dict[str, pa.DataType]:
        """Every column and nested struct field as a dotted path -> Arrow type."""
        return flatten_schema(self.archive_schema)


def flatten_schema(schema: pa.Schema) -> dict[str, pa.DataType]:
    """Dotted paths of every field, descending into structs (not into lists or maps)."""
    out: dict[str, pa.DataType] = {}

    def visit(prefix: str, dtype: pa.DataType) -> None:
        out[prefix] = dtype
        if pa.types.is_struct(dtype):
            for child in dtype:
                visit(f"{prefix}.{child.name}", child.type)

    for f in schema:
        visit(f.name, f.type)
    return out


def filter_name_candidates(query: str) -> list[str]:
    """Registry names a filter `query` may denote: itself, a `filter_<name>` module, or a dotted
    Fink module path (`fink_filters.<survey>.livestream.filter_<name>.filter.<name>`, with or
    without the function)."""
    q = query.strip()
    out = [q]
    if "." in q:
        out.append(q.rsplit(".", 1)[-1])
        out.extend(part.removeprefix("filter_") for part in q.split(".") if part.startswith("filter_"))
    out.append(q.removeprefix("filter_"))
    return out


def schema_field_type(schema: pa.Schema, path: str) -> pa.DataType | None:
    """The type of dotted `path` in `schema` (through structs only), None when absent."""
    root, *rest = path.split(".")
    if root not in schema.names:
        return None
    dtype = schema.field(root).type
    for part in rest:
        if not pa.types.is_struct(dtype) or dtype.get_field_index(part) < 0:
            return None
        dtype = dtype.field(part).type
    return dtype
