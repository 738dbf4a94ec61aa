"""The transfer request: what a user asks of the Data Transfer form, validated before Spark runs.

`TransferRequestFields` holds only plain types so that the Dagster launchpad can show it as a
form (the orchestration layer mixes it into a `dg.Config`); `TransferRequest` adds the request
id. Loading accepts Fink's portal YAML export (`dates: {startdate, stopdate}`, `filters`,
`content`, `extra_cond`) as well as our own flat keys.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import secrets
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fink_pipeline.archive.layout import parse_night
from fink_pipeline.surveys import available_surveys, get_survey
from fink_pipeline.surveys.packets import find_packet
from fink_pipeline.transfer.conditions import (
    MAX_CONDITION_LENGTH,
    MAX_CONDITIONS,
    MAX_CONDITIONS_LENGTH,
    conditions_size_problem,
)

PACKETS = ("light", "medium", "full")
ALL_CLASSES = "allclasses"
MAX_NIGHTS = 3660  # ten years: beyond this a typo in a year is far more likely than intent
MAX_CLASSES = 500  # Fink labels + every SIMBAD otype + TNS types stay well below this
MAX_CONTENT_FIELDS = 1000  # more than any survey schema has fields
MAX_SELECTIONS = 100  # filters or blocks in one request: Fink has about 30 of them in all
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PATH_LENGTH = 4096  # PATH_MAX on Linux
MAX_RADIUS_ARCSEC = 3600.0  # one degree: a cone search, not a cross-match, beyond that
# Fink's ZTF Xmatch service content when none is chosen (the catalogue's id column is added)
XMATCH_DEFAULT_CONTENT = ("objectId", "candid")
NEGATION = "NOT "
# A survey, date, class, filter or field name: the longest real ones are under 100 characters.
# Longer text is refused before it is looked up or echoed in an error message.
MAX_NAME_LENGTH = 200
# A request file is a few kB; at the limits above it stays well under this. PyYAML needs
# seconds and hundreds of MB for a file of tens of MB, so larger files are not parsed.
MAX_REQUEST_FILE_BYTES = 1_048_576
# The limits of oversized requests, re-exported for users of this module.
__all__ = [
    "ALL_CLASSES", "MAX_CLASSES", "MAX_CONDITIONS", "MAX_CONDITIONS_LENGTH", "MAX_CONDITION_LENGTH",
    "MAX_CONTENT_FIELDS", "MAX_NAME_LENGTH", "MAX_NIGHTS", "MAX_PATH_LENGTH", "MAX_RADIUS_ARCSEC",
    "MAX_REQUEST_FILE_BYTES", "MAX_SELECTIONS", "PACKETS", "RequestError", "TransferRequest", "TransferRequestFields",
    "XMATCH_DEFAULT_CONTENT", "load_request_file", "normalize_selection", "request_from_mapping", "split_negation",
]


class RequestError(ValueError):
    """A request that cannot run: the message names the field and how to fix it."""


def _closest(value: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def normalize_selection(item: str, what: str = "filters") -> str:
    """One filter or block item as `name` or `NOT name` (Fink's negation prefix, any case and
    spacing accepted); ValueError for a negation of nothing."""
    words = item.split()
    if words and words[0].upper() == NEGATION.strip():
        if len(words) == 1:
            raise ValueError(f"{item.strip()!r} negates nothing; write 'NOT <name>', e.g. 'NOT b_is_solar_system'")
        if len(words) > 2:
            raise ValueError(f"{item.strip()!r} is not 'NOT <name>'; one name per item")
        return NEGATION + words[1]
    if len(words) != 1:
        raise ValueError(f"{item.strip()!r} is not a {what[:-1]} name; one name per item, or 'NOT <name>'")
    return words[0]


def split_negation(item: str) -> tuple[str, bool]:
    """(`name`, negated) of a normalized filter or block item."""
    return (item[len(NEGATION):], True) if item.startswith(NEGATION) else (item, False)


def _check_name_lengths(value: Any, what: str) -> Any:
    """Refuse any string (or list item) longer than MAX_NAME_LENGTH, without echoing it."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for index, item in enumerate(items):
        if isinstance(item, str) and len(item) > MAX_NAME_LENGTH:
            where = f"item {index} is " if item is not value else ""
            raise ValueError(
                f"{where}{len(item)} characters long, at most {MAX_NAME_LENGTH} for {what}; "
                "check what was pasted there"
            )
    return value


class TransferRequestFields(BaseModel):
    """The fields of a transfer request (plain types: usable as a Dagster launchpad form)."""

    model_config = ConfigDict(extra="forbid")

    survey: str = Field(default="ztf", description="Survey: ztf, lsst or elasticc.")
    start: str = Field(description="First night, inclusive (YYYY-MM-DD).")
    stop: str = Field(description="Last night, inclusive (YYYY-MM-DD).")
    classes: list[str] = Field(
        default_factory=list,
        description="Fink labels, '(TNS) <type>' or '(SIMBAD) <otype>'; empty = all classes.",
    )
    filters: list[str] = Field(
        default_factory=list,
        description="Fink live-stream filters to replay, ANDed (e.g. sn_candidates; Rubin: "
        "extragalactic_lt20mag_candidate); 'NOT name' keeps the alerts a filter rejects.",
    )
    blocks: list[str] = Field(
        default_factory=list,
        description="Rubin building blocks, ANDed after the filters (e.g. b_is_new); "
        "'NOT name' negates one.",
    )
    conditions: list[str] = Field(
        default_factory=list,
        description="Extra SQL conditions, ANDed (e.g. 'candidate.magpsf > 19.5').",
    )
    content: list[str] = Field(
        default_factory=lambda: ["light"],
        description="'light', 'medium', 'full', or a list of fields (e.g. candidate.magpsf).",
    )
    limit: int | None = Field(default=None, description="Publish at most this many alerts (test job).")
    catalog_filename: str | None = Field(
        default=None,
        description="Catalogue of sources to cross-match the alerts with (CSV or Parquet path): only "
        "alerts within the radius of a source are kept, one row per (alert, source), with the "
        "source's id added as a column named after id_col.",
    )
    ra_col: str = Field(default="ra", description="Catalogue column of right ascension (degrees, or hh:mm:ss).")
    dec_col: str = Field(default="dec", description="Catalogue column of declination (degrees, or +dd:mm:ss).")
    id_col: str = Field(default="id", description="Catalogue column of source ids: added to every matched alert.")
    radius_arcsec: float | None = Field(default=None, description="Match radius in arcsec (or radius_col).")
    radius_col: str | None = Field(default=None, description="Catalogue column of per-source radii in arcsec.")

    @model_validator(mode="before")
    @classmethod
    def _single_filter_alias(cls, data: Any) -> Any:
        # requests saved before filters became a list carry `livestream_filter: name`
        if isinstance(data, Mapping) and "livestream_filter" in data:
            data = dict(data)
            single = data.pop("livestream_filter")
            if single not in (None, ""):
                extra = data.get("filters") or []
                data["filters"] = [single, *(extra if isinstance(extra, (list, tuple)) else [extra])]
        return data

    @field_validator("survey", "ra_col", "dec_col", "id_col", "radius_col", mode="before")
    @classmethod
    def _short_name(cls, value: Any) -> Any:
        return _check_name_lengths(value, "a name")

    @field_validator("catalog_filename", mode="before")
    @classmethod
    def _catalog_path(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str) and len(value) > MAX_PATH_LENGTH:
            raise ValueError(f"{len(value)} characters long, at most {MAX_PATH_LENGTH} for a path; "
                             "check what was pasted there")
        if isinstance(value, str) and "://" not in value:
            # stored absolute: the run may start from another folder than the submission
            return str(Path(value.strip()).expanduser().resolve())
        return value

    @field_validator("id_col")
    @classmethod
    def _publishable_id_column(cls, value: str) -> str:
        # it names a published column: an Avro field name, and a plain Spark column name
        if not _AVRO_NAME.fullmatch(value):
            raise ValueError(f"{value[:80]!r} cannot name the published id column (letters, digits and _, "
                             "not starting with a digit); rename the catalogue's id column")
        return value

    @field_validator("radius_arcsec")
    @classmethod
    def _positive_radius(cls, value: float | None) -> float | None:
        if value is not None and not (0 < value <= MAX_RADIUS_ARCSEC):
            raise ValueError(f"{value} arcsec is not a match radius: "
                             f"give a radius in (0, {MAX_RADIUS_ARCSEC:g}] arcsec")
        return value

    @field_validator("filters", "blocks", mode="before")
    @classmethod
    def _selection_list(cls, value: Any, info) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and len(value) > MAX_SELECTIONS:
            raise ValueError(f"{len(value)} {info.field_name}, at most {MAX_SELECTIONS}; Fink offers fewer than that")
        return _check_name_lengths(value, "a filter or block name")

    @field_validator("filters", "blocks")
    @classmethod
    def _negations(cls, values: list[str], info) -> list[str]:
        return list(dict.fromkeys(normalize_selection(v, info.field_name) for v in values if v and v.strip()))

    @field_validator("classes", mode="before")
    @classmethod
    def _short_class_names(cls, value: Any) -> Any:
        return _check_name_lengths(value, "a class name")

    @field_validator("survey")
    @classmethod
    def _known_survey(cls, value: str) -> str:
        name = value.strip().lower()
        if name not in available_surveys():
            raise ValueError(
                f"survey {value!r} is unknown; choose one of {', '.join(available_surveys())}"
                + _closest(name, available_surveys())
            )
        return name

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2024-03-01 as a date
        return value.isoformat()[:10] if isinstance(value, dt.date) else _check_name_lengths(value, "a date")

    @field_validator("start", "stop")
    @classmethod
    def _iso_night(cls, value: str) -> str:
        try:
            return parse_night(value).isoformat()
        except ValueError:
            raise ValueError(f"{value!r} is not a date; write it as YYYY-MM-DD (e.g. 2024-03-01)") from None

    @field_validator("classes")
    @classmethod
    def _clean_classes(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip() for v in values if v and v.strip()]
        if len(cleaned) > MAX_CLASSES:
            raise ValueError(f"{len(cleaned)} classes requested, at most {MAX_CLASSES}; use fewer classes or all classes")
        return [] if ALL_CLASSES in cleaned else list(dict.fromkeys(cleaned))

    @field_validator("conditions")
    @classmethod
    def _strip_conditions(cls, values: list[str]) -> list[str]:
        # sized before anything parses them: 10,000 conditions or a 1 MB textarea stop here
        _, problem = conditions_size_problem(values)
        if problem is not None:
            raise ValueError(problem)
        return [v.strip() for v in values if v and v.strip()]

    @field_validator("content", mode="before")
    @classmethod
    def _content_list(cls, value: Any) -> list[str]:
        if value is None:
            return ["light"]
        if isinstance(value, str):
            longest = MAX_CONTENT_FIELDS * (MAX_NAME_LENGTH + 1)
            if len(value) > longest:
                raise ValueError(f"{len(value)} characters of content fields, at most {longest}; "
                                 "use the full packet instead")
            value = [part for part in re.split(r"[,\s]+", value) if part]
        if not isinstance(value, (list, tuple)):
            return value  # pydantic names the wrong type
        if len(value) > MAX_CONTENT_FIELDS:
            raise ValueError(f"{len(value)} content fields, at most {MAX_CONTENT_FIELDS}; use the full packet instead")
        _check_name_lengths(value, "a field name")
        items = [str(v).strip() for v in value if str(v).strip()]
        if len(items) > MAX_CONTENT_FIELDS:
            raise ValueError(f"{len(items)} content fields, at most {MAX_CONTENT_FIELDS}; use the full packet instead")
        if not items:
            raise ValueError("content is empty; use light, medium, full or a list of fields")
        return items

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"limit must be a positive number of alerts, got {value}")
        return value

    @model_validator(mode="after")
    def _coherent(self):
        content_given = "content" in self.model_fields_set  # before the assignments below add it
        start, stop = dt.date.fromisoformat(self.start), dt.date.fromisoformat(self.stop)
        if stop < start:
            raise ValueError(f"stop ({self.stop}) is before start ({self.start}); swap them")
        if (stop - start).days + 1 > MAX_NIGHTS:
            raise ValueError(
                f"the range {self.start}..{self.stop} spans {(stop - start).days + 1} nights, "
                f"more than {MAX_NIGHTS}; check the years"
            )
        first = get_survey(self.survey).first_night
        if stop < first:
            raise ValueError(f"stop ({self.stop}) is before the first {self.survey} night ({first})")
        packets = get_survey(self.survey).packets
        whole = " ".join(self.content)
        if len(self.content) > 1 and find_packet(packets, whole) is not None:
            # a portal name given as one flat string was split into words: "Light static packet"
            self.content = [whole]
        named = [c for c in self.content if find_packet(packets, c) is not None]
        if named and len(self.content) > 1:
            raise ValueError(
                f"content {self.content}: a packet ({named[0]}) cannot be combined with other "
                "fields; use either one packet or a list of fields"
            )
        if named and self.content[0].lower() in PACKETS:
            self.content = [self.content[0].lower()]
        self._coherent_catalog(content_given)
        return self

    def _coherent_catalog(self, content_given: bool) -> None:
        """Cross-match keys: a catalogue needs exactly one radius; a radius needs a catalogue.
        Fink's ZTF Xmatch service publishes `objectId, candid, <id_col>` unless told otherwise."""
        if self.catalog_filename is None:
            given = [k for k in ("radius_arcsec", "radius_col", "catalog_sha256") if getattr(self, k, None) is not None]
            if given:
                raise ValueError(f"{given[0]} is given without a catalogue: add catalog_filename "
                                 "(--catalog FILE), or drop it")
            return
        if (self.radius_arcsec is None) == (self.radius_col is None):
            raise ValueError(
                "catalog_filename: give the match radius, either fixed (radius_arcsec, --radius-arcsec R) "
                "or per source (radius_col, --radius-col C), not both"
                if self.radius_arcsec is not None else
                "catalog_filename: give the match radius: radius_arcsec (--radius-arcsec R, e.g. 1.5) "
                "or a catalogue column of radii in arcsec, radius_col (--radius-col C)"
            )
        if self.survey == "ztf" and not content_given:
            self.content = list(XMATCH_DEFAULT_CONTENT)

    # -- derived values -------------------------------------------------------------------
    @property
    def start_night(self) -> dt.date:
        return dt.date.fromisoformat(self.start)

    @property
    def stop_night(self) -> dt.date:
        return dt.date.fromisoformat(self.stop)

    @property
    def nights(self) -> list[dt.date]:
        """Every night of the inclusive range."""
        days = (self.stop_night - self.start_night).days + 1
        return [self.start_night + dt.timedelta(days=i) for i in range(days)]

    @property
    def topic_prefix(self) -> str:
        """The survey's topic prefix; Fink's ZTF Xmatch service's (fxmatch_ztf) with a catalogue."""
        survey = get_survey(self.survey)
        if self.catalog_filename is not None and survey.crossmatch_topic_prefix:
            return survey.crossmatch_topic_prefix
        return survey.topic_prefix

    @property
    def packet(self) -> str | None:
        """'light', 'medium' or 'full' when a pre-defined packet was chosen, else None."""
        return self.content[0] if self.content[0] in PACKETS else None


_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def validate_topic_name(name: str) -> str:
    """Return `name` if Kafka accepts it as a topic name, else raise ValueError (a stored
    request's file is named after its topic, so this also keeps '../x' out of the store)."""
    if not isinstance(name, str) or not _TOPIC_RE.match(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid Kafka topic name {name!r}: 1-249 characters among letters, digits, . _ -"
        )
    return name


class TransferRequest(TransferRequestFields):
    """A validated transfer request with its identity (request id and topic)."""

    request_id: str | None = Field(default=None, description="Set when the request is submitted.")
    topic: str | None = Field(default=None, description="Kafka topic, set when submitted.")
    catalog_sha256: str | None = Field(
        default=None,
        description="Set when submitted: the catalogue's content hash, so that a retry or a replay "
        "matches against the same sources.",
    )

    @field_validator("catalog_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("is not a SHA-256 hex digest (64 lower-case hex digits)")
        return value

    def with_identity(self, existing_topics: Iterable[str] = (), now: dt.datetime | None = None):
        """Return a copy carrying a fresh request id and a topic name unused in `existing_topics`."""
        taken = set(existing_topics)
        now = now or dt.datetime.now(dt.timezone.utc)
        prefix = self.topic_prefix
        for _ in range(100):
            # Fink uses the microsecond field; we keep that shape but draw it at random and
            # check it against existing topics, so two submissions never share a topic.
            suffix = secrets.randbelow(1_000_000)
            topic = f"{prefix}_{now.date().isoformat()}_{suffix}"
            if topic not in taken and f"{topic}_schema" not in taken:
                return self.model_copy(update={"request_id": f"{now:%Y%m%dT%H%M%S}-{suffix}", "topic": topic})
        raise RequestError("could not find an unused topic name after 100 draws")


_PORTAL_KEYS = {"dates", "filters", "extra_cond", "fclass", "classes", "blocks"}


def request_from_mapping(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TransferRequest:
    """Build a request from a mapping in Fink's portal export shape or in our flat shape.

    `overrides` (e.g. CLI flags) win over the file's values; None values are ignored.
    """
    flat: dict[str, Any] = {}
    data = dict(data or {})
    if _is_lsst_portal_export(data, overrides):
        # Fink's LSST portal writes no survey key; its exports are the ones with `blocks`
        flat["survey"] = LSST_PORTAL_SURVEY
    if "dates" in data:
        dates = data.pop("dates") or {}
        if not isinstance(dates, Mapping):
            raise RequestError("dates: expected a mapping with startdate and stopdate")
        for portal_key, key in (("startdate", "start"), ("stopdate", "stop")):
            if dates.get(portal_key) in (None, ""):
                raise RequestError(f"dates.{portal_key} is required (YYYY-MM-DD)")
            flat[key] = dates[portal_key]
    if "extra_cond" in data:
        flat["conditions"] = _string_list(data.pop("extra_cond"), "extra_cond")
    for key in ("filters", "blocks"):
        if key in data:
            flat[key] = [f for f in _string_list(data.pop(key), key) if f]
    for key in ("fclass", "classes"):
        if key in data:
            flat["classes"] = _string_list(data.pop(key), key)
    flat.update(data)
    for key, value in (overrides or {}).items():
        if value is not None and value != [] and value != ():
            flat[key] = value
    # Conditions may arrive as one textarea: split on ';' and newlines like the portal does
    # (the conditions module re-splits safely, respecting quoted strings).
    try:
        return TransferRequest(**flat)
    except ValidationError as exc:
        raise RequestError(_format_validation_error(exc)) from None


LSST_PORTAL_SURVEY = "lsst"


def _is_lsst_portal_export(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> bool:
    """A YAML downloaded from Fink's LSST portal: portal `dates`, a `blocks` key (the ZTF
    portal has neither blocks nor YAML export) and no survey given in the file or the flags."""
    return ("dates" in data and "blocks" in data and "survey" not in data
            and (overrides or {}).get("survey") is None)


def _string_list(value: Any, key: str) -> list:
    """A YAML value that must be a string or a list (None = empty); pydantic checks the items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    # never echo the value: hostile YAML (alias bombs) can make its repr enormous
    raise RequestError(f"{key}: expected a string or a list of strings, got a {type(value).__name__}")


def load_request_file(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TransferRequest:
    """Load a request YAML (Fink portal export or flat keys); `overrides` win."""
    path = Path(path)
    try:
        with path.open("rb") as stream:  # read at most the limit: the path may be a pipe or /dev/zero
            raw = stream.read(MAX_REQUEST_FILE_BYTES + 1)
    except FileNotFoundError:
        raise RequestError(f"request file {path} does not exist") from None
    except IsADirectoryError:
        raise RequestError(f"request file {path} is a directory; give the path of a YAML file") from None
    if len(raw) > MAX_REQUEST_FILE_BYTES:
        raise RequestError(
            f"request file {path} is larger than {MAX_REQUEST_FILE_BYTES} bytes, the limit for a request; "
            "check that it is the request you meant"
        )
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(f"request file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        # one line (problem, line, column): PyYAML's own text spans several lines with a snippet
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RequestError(f"request file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RequestError(f"request file {path}: expected a mapping of keys, got {type(data).__name__}")
    catalog = data.get("catalog_filename")
    relative = isinstance(catalog, str) and catalog.strip() and "://" not in catalog
    if relative and not Path(catalog).expanduser().is_absolute():
        # a catalogue named in a request file is found next to that file
        data = {**data, "catalog_filename": str(path.resolve().parent / catalog.strip())}
    return request_from_mapping(data, overrides)


def _format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field: pydantic's own text is too noisy for users."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "request"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "is required"
        elif err["type"] == "extra_forbidden":
            known = list(TransferRequest.model_fields) + sorted(_PORTAL_KEYS)
            message = "is not a request key" + _closest(str(err["loc"][-1]), known)
        # a whole-request check (stop before start, packet and fields) already starts with
        # the name of the field it is about
        lines.append(f"{field}: {message}" if err["loc"] else message)
    return "; ".join(lines)
