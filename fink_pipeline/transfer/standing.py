"""Standing requests: a transfer replayed every morning on the night just finished.

A standing request is a transfer request without dates, kept as `<root>/<name>.yaml` (written
by `fink-pipeline request standing add`, or by hand). Each morning the orchestrator turns every
standing request into a `TransferRequest` for the last finished night. Its identity is derived
from the name and the night (`request_id = <name>:<night>`, topic `<prefix>_<night>_<name>`),
so evaluating the same morning twice yields the same request, the same topic and the same
run key: a night is never transferred twice.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from fink_pipeline.transfer.request import RequestError, TransferRequest, request_from_mapping

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
DATE_KEYS = ("start", "stop", "dates")
MAX_CATCH_UP_NIGHTS = 7


def validate_name(name: str) -> str:
    """A standing request name: lower-case letters, digits, '-' and '_' (it ends up in topic names)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise RequestError(
            f"standing request name {name!r} is invalid: use 1-48 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. sn-watch)"
        )
    return name


@dataclass(frozen=True)
class StandingRequest:
    """A named request template (every request key except the dates)."""

    name: str
    fields: dict[str, Any]

    def for_night(self, night: dt.date) -> TransferRequest:
        """The transfer of `night` (validated like any request; RequestError otherwise)."""
        request = request_from_mapping(self.fields, {"start": night.isoformat(), "stop": night.isoformat()})
        return request.model_copy(
            update={"request_id": f"{self.name}:{night.isoformat()}",
                    "topic": f"{request.topic_prefix}_{night.isoformat()}_{self.name}"}
        )

    def run_key(self, night: dt.date) -> str:
        """The run key of this request's replay of `night` (one run per request and night)."""
        return f"{self.name}:{night.isoformat()}"


def standing_from_mapping(name: str, data: Mapping[str, Any], archive_root: str | None = None) -> StandingRequest:
    """Build and validate a standing request; dates are refused (the night is set each morning).

    Everything is checked now rather than at the first replay: the request keys, and with
    `archive_root` also the classes, conditions, filter and content (`plan_transfer`).
    """
    from fink_pipeline.transfer.plan import plan_transfer

    validate_name(name)
    fields = dict(data or {})
    fields.pop("name", None)
    dated = [key for key in DATE_KEYS if key in fields]
    if dated:
        raise RequestError(
            f"{', '.join(dated)}: a standing request has no dates, it is replayed on each night just finished; "
            "remove them"
        )
    standing = StandingRequest(name, fields)
    request = standing.for_night(dt.date.today())
    if archive_root is not None:
        plan_transfer(request, archive_root, [dt.date.today()])
    return standing


class StandingStore:
    """A folder of standing requests, `<root>/<name>.yaml`, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / f"{validate_name(name)}.yaml"

    def add(self, standing: StandingRequest, replace: bool = False) -> Path:
        """Store `standing`; an existing name is an error unless `replace`."""
        path = self.path(standing.name)
        if path.exists() and not replace:
            raise RequestError(
                f"standing request {standing.name!r} already exists ({path}); remove it first or use --replace"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(yaml.safe_dump(standing.fields, sort_keys=False))
        os.replace(tmp, path)
        return path

    def load(self, name: str) -> StandingRequest:
        """The standing request `name` (RequestError naming the file when it is missing or bad)."""
        path = self.path(name)
        if not path.exists():
            raise RequestError(f"no standing request {name!r} in {self.root}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RequestError(f"standing request file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise RequestError(f"standing request file {path}: expected a mapping of request keys")
        try:
            return standing_from_mapping(name, data)
        except RequestError as exc:
            raise RequestError(f"standing request file {path}: {exc}") from None

    def names(self) -> list[str]:
        """Names of the stored standing requests, sorted (files with invalid names are ignored)."""
        if not self.root.exists():
            return []
        return sorted(p.stem for p in self.root.glob("*.yaml") if NAME_PATTERN.match(p.stem))

    def remove(self, name: str) -> bool:
        """Delete `name`; True when it existed."""
        path = self.path(name)
        if not path.exists():
            return False
        path.unlink()
        return True


def last_finished_night(now: dt.datetime, replay_hour_utc: int = 9) -> dt.date:
    """The night replayed at `now`: yesterday (UTC) once `replay_hour_utc` has passed, else the day before."""
    if not 0 <= replay_hour_utc <= 23:
        raise ValueError(f"replay_hour_utc must be 0..23, got {replay_hour_utc}")
    now = now.astimezone(dt.timezone.utc) if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
    return (now - dt.timedelta(hours=replay_hour_utc)).date() - dt.timedelta(days=1)


def due_nights(now: dt.datetime, last_replayed: dt.date | None, replay_hour_utc: int = 9,
               max_catch_up: int = MAX_CATCH_UP_NIGHTS) -> list[dt.date]:
    """Nights to replay at `now`, oldest first: those after `last_replayed` up to the last finished
    night, at most `max_catch_up` of them (a daemon down for a weekend catches up; a first
    evaluation replays only the last night)."""
    last = last_finished_night(now, replay_hour_utc)
    if last_replayed is None:
        return [last]
    nights = []
    night = last
    while night > last_replayed and len(nights) < max_catch_up:
        nights.append(night)
        night -= dt.timedelta(days=1)
    return sorted(nights)
