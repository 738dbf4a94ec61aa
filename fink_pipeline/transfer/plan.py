"""A transfer request checked against its survey and the archive: the `TransferPlan`.

Everything that can be wrong with a request is found here, before Spark or Kafka start: the
survey's classes, conditions and content, the filters and blocks, the nights present, and
files the job could not read (`archive.file_schemas`).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fink_pipeline.archive.file_schemas import ArchiveFileSchemaError, check_night_files
from fink_pipeline.archive.layout import night_dir
from fink_pipeline.archive.stats import known_labels, load_archive_tns_catalog, night_footers
from fink_pipeline.surveys import available_surveys, get_survey
from fink_pipeline.surveys.base import ClassError, SelectionFunction, Survey
from fink_pipeline.transfer.conditions import ValidatedCondition, validate_conditions
from fink_pipeline.transfer.content import PARTITION_COLUMNS, ContentPlan, available_fields, resolve_content
from fink_pipeline.transfer.crossmatch.prepare import CrossmatchPlan, prepare_crossmatch
from fink_pipeline.transfer.request import RequestError, TransferRequestFields, split_negation

if TYPE_CHECKING:
    from pyspark.sql import Column


class NoDataError(RequestError):
    """None of the requested nights exists in the archive."""


@dataclass
class TransferPlan:
    """Everything the job needs, resolved and validated before Spark starts."""

    survey: Survey
    request: TransferRequestFields
    archive_root: str
    night_paths: list[str]
    missing_nights: list[dt.date]
    conditions: list[ValidatedCondition]
    # the request's filters then its blocks, resolved (Fink's order: ANDed after the conditions)
    selections: list[AppliedSelection]
    content: ContentPlan
    # warnings that do not stop the request (e.g. a class no statistics has seen yet)
    notes: list[str] = field(default_factory=list)
    # prepared TNS catalogue (pyarrow Table) the tnsclass is computed with; None: all "Unknown"
    tns_catalog: Any = None
    # each present night's Parquet files (path -> archive.footers.FooterSummary), listed and read once here
    footers: dict[dt.date, dict[str, Any]] = field(default_factory=dict)
    # the catalogue cross-match (its id column is the content's last column); None: no catalogue
    crossmatch: CrossmatchPlan | None = None

    @property
    def class_tns_catalog(self) -> Any:
        """The TNS catalogue the class columns (and so the nightly statistics) depend on: None
        where TNS only feeds a recomputed column (Rubin), which statistics do not count."""
        return self.tns_catalog if self.survey.uses_tns else None

    @property
    def present_nights(self) -> list[dt.date]:
        """The requested nights the archive has."""
        missing = set(self.missing_nights)
        return [n for n in self.request.nights if n not in missing]

    def footer_input_bytes(self):
        """Compressed bytes of the column chunks the transfer job reads (`read_fields`), from the
        footers the plan already read (`metrics.FooterBytes`); None without archive files."""
        from fink_pipeline.transfer.metrics import footers_input_bytes

        footers = [footer for night in self.footers.values() for footer in night.values()]
        return footers_input_bytes(footers, self.read_fields()) if footers else None

    def read_fields(self, *, content: bool = True, selection: bool = True) -> list[str]:
        """Archive fields the transfer job reads (`stored_fields`): the classification inputs,
        plus the content's fields (`content`) and those of the conditions, filters and blocks
        (`selection`)."""
        fields: list[str] = list(self.survey.classification_inputs)
        if self.survey.tns_recompute is not None and self.tns_catalog is not None:
            fields += self.survey.tns_recompute.inputs
        if self.crossmatch is not None:
            fields += self.crossmatch.position
        if content:
            fields += [f for f in self.content.source_fields
                       if self.crossmatch is None or f != self.crossmatch.id_col]
        if selection:
            for condition in self.conditions:
                fields += condition.fields
            for selection in self.selections:
                fields += list(selection.function.columns_read)
        return stored_fields(self.survey, fields)


def _reads(column: str, conditions: Sequence[ValidatedCondition], content: ContentPlan) -> bool:
    """True when a condition or the content reads `column`."""
    fields = [f for c in conditions for f in c.fields] + list(content.source_fields)
    return any(f.split(".")[0] == column for f in fields)


def other_surveys_fields(survey: Survey) -> dict[str, str]:
    """Fields the other surveys have and `survey` lacks -> the first survey having each."""
    return _other_surveys_fields(survey.name)


@functools.lru_cache(maxsize=None)
def _other_surveys_fields(name: str) -> dict[str, str]:
    # flattening every survey schema costs milliseconds: once per process, not once per plan
    own = get_survey(name).field_paths
    out: dict[str, str] = {}
    for other in available_surveys():
        if other != name:
            for path in get_survey(other).field_paths:
                if path not in own:
                    out.setdefault(path, other)
    return out


def stored_fields(survey: Survey, fields: Sequence[str]) -> list[str]:
    """`fields` once each, without those no archive file holds: the partition columns and the
    class columns the survey computes (a stored class column, ELAsTiCC's classId, is read)."""
    computed = set(survey.class_columns) if survey.classify_arrow is not None else set()
    skip = computed | set(PARTITION_COLUMNS)
    return [f for f in dict.fromkeys(fields) if f.split(".")[0] not in skip]


def plan_transfer(
    request: TransferRequestFields,
    archive_root: str,
    existing_nights: Sequence[dt.date],
    *,
    tns_catalog: Any = None,
    on_request_valid: Callable[[], None] | None = None,
) -> TransferPlan:
    """Validate every part of `request` against the survey and the archive (no Spark needed).

    Classes are checked by the survey (`Survey.validate_classes`) against its labels and those
    the archive's nightly statistics have seen. `tns_catalog` (an Arrow table with ra,
    declination, type) overrides the archive's own `<root>/<survey>/tns/tns.parquet`.
    `on_request_valid` is called once the request's own fields are valid and its nights hold
    data, before the nights' files and the catalogue are read and checked (~1 s of footers for
    1M alerts): a command starts its JVM then.
    """
    survey = get_survey(request.survey)
    fields = available_fields(survey, list(survey.class_columns))
    conditions = validate_conditions(request.conditions, fields, map_keys=survey.map_keys,
                                     elsewhere=other_surveys_fields(survey) if request.conditions else {})
    selections = resolve_selections(survey, request)
    content = resolve_content(survey, request.content, survey.class_columns)
    if request.catalog_filename is not None:
        _check_id_column(survey, request.id_col, content)
    tns_catalog = (load_archive_tns_catalog(archive_root, survey) if tns_catalog is None
                   else survey.prepare_tns_catalog(tns_catalog))
    notes: list[str] = []
    if request.classes:
        tns_types = set(tns_catalog.column("type").to_pylist()) if tns_catalog is not None else None
        try:
            notes = survey.validate_classes(request.classes, known_labels(archive_root, survey.name), tns_types)
        except ClassError as exc:
            raise RequestError(str(exc)) from None
    recompute = survey.tns_recompute
    if recompute is not None and tns_catalog is None and _reads(recompute.column, conditions, content):
        notes.append(f"no TNS catalogue under {archive_root}: {recompute.column} keeps the values stored "
                     "when the alerts were processed")
    existing = set(existing_nights)
    present = [n for n in request.nights if n in existing]
    missing = [n for n in request.nights if n not in existing]
    if not present:
        raise NoDataError(
            f"No alert data found in between {request.start} and {request.stop} "
            f"for {survey.name} under {archive_root}"
        )
    if on_request_valid is not None:
        on_request_valid()
    footers = {n: night_footers(archive_root, survey.name, n) for n in present}
    try:
        check_night_files(footers.items(), survey.archive_schema)
    except ArchiveFileSchemaError as exc:
        raise RequestError(str(exc)) from None
    paths = [night_dir(archive_root, survey.name, n) for n in present]
    # last of the checks: reading and indexing a large catalogue takes seconds
    crossmatch = prepare_crossmatch(request, survey)
    if crossmatch is not None:
        content = ContentPlan(content.packet, content.columns + ((crossmatch.id_col, crossmatch.id_col),))
    return TransferPlan(survey, request, archive_root, paths, missing, conditions, selections, content,
                        notes=notes, tns_catalog=tns_catalog, footers=footers, crossmatch=crossmatch)


def pin_catalog(request: TransferRequestFields, plan: TransferPlan):
    """`request` recording its catalogue's content hash (`catalog_sha256`): its runs, retries
    and replays match against these sources even if the file is edited or removed later."""
    if plan.crossmatch is None:
        return request
    return request.model_copy(update={"catalog_sha256": plan.crossmatch.sha256})


def _check_id_column(survey: Survey, id_col: str, content: ContentPlan) -> None:
    """The catalogue's id column becomes an output column: it must not shadow an alert's."""
    taken = set(survey.archive_schema.names) | set(survey.class_columns) | set(PARTITION_COLUMNS)
    if id_col in taken or id_col in content.output_names:
        raise RequestError(
            f"id_col: {id_col!r} is also the name of an alert column, and the catalogue's ids are published "
            "in a column of that name; rename the id column in the catalogue (e.g. to source_id) and give it "
            "with --id-col")


@dataclass(frozen=True)
class AppliedSelection:
    """A filter or block of the request: the survey's function, negated by a `NOT ` prefix."""

    kind: str  # "filter" or "block"
    function: SelectionFunction
    negated: bool = False

    @property
    def label(self) -> str:
        """As the user wrote it, normalized: `name` or `NOT name`."""
        return ("NOT " if self.negated else "") + self.function.name

    def column(self) -> "Column":
        """Null-free boolean Spark column: True for the alerts this item keeps."""
        selected = self.function.column()
        return ~selected if self.negated else selected


def resolve_selections(survey: Survey, request: TransferRequestFields) -> list[AppliedSelection]:
    """The request's filters then blocks, each resolved by the survey; RequestError naming the
    first unknown one (with the closest name) or a kind the survey does not have."""
    out: list[AppliedSelection] = []
    for kind, items in (("filter", request.filters), ("block", request.blocks)):
        for item in items:
            name, negated = split_negation(item)
            try:
                function = survey.resolve_selection(kind, name)
            except ValueError as exc:
                raise RequestError(f"{kind}s: {exc}") from None
            out.append(AppliedSelection(kind, function, negated))
    return out
