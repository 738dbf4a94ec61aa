"""Submitted requests, stored as JSON files named after their topic (one file per transfer)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from fink_pipeline.transfer.request import RequestError, TransferRequest, validate_topic_name


class RequestStore:
    """A folder of submitted requests: `<root>/<topic>.json`, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, topic: str) -> Path:
        """The file of `topic`; a name that is not a valid topic (e.g. '../x') is refused."""
        try:
            validate_topic_name(topic)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        return self.root / f"{topic}.json"

    def save(self, request: TransferRequest) -> Path:
        """Store a request that has its identity (topic) set; never overwrites another topic's file."""
        if not request.topic:
            raise RequestError("the request has no topic yet: give it an identity before storing it")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(request.topic)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(request.model_dump(mode="json"), indent=2))
        os.replace(tmp, path)
        return path

    def load(self, topic: str) -> TransferRequest:
        """The stored request of `topic` (clear error when it was never submitted)."""
        path = self.path(topic)
        if not path.exists():
            raise RequestError(
                f"no submitted request for {topic} in {self.root}: submit it with "
                "`fink-pipeline request submit` (or the launchpad) first"
            )
        return TransferRequest.model_validate_json(path.read_text())

    def topics(self) -> list[str]:
        """Topics of every stored request, oldest first."""
        if not self.root.exists():
            return []
        files = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime)
        return [p.stem for p in files]
