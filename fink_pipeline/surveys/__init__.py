"""Survey registry. Adding a survey is adding one module that defines `SURVEY`."""

from __future__ import annotations

import importlib

from fink_pipeline.surveys.base import Survey

SURVEY_MODULES = {
    "ztf": "fink_pipeline.surveys.ztf",
    "lsst": "fink_pipeline.surveys.lsst",
    "elasticc": "fink_pipeline.surveys.elasticc",
}


class UnknownSurveyError(ValueError):
    """Raised for a survey name that is not registered."""


def get_survey(name: str) -> Survey:
    """Return the registered survey called `name` (case-insensitive)."""
    key = name.strip().lower()
    if key not in SURVEY_MODULES:
        raise UnknownSurveyError(
            f"unknown survey {name!r}: choose one of {', '.join(sorted(SURVEY_MODULES))}"
        )
    return importlib.import_module(SURVEY_MODULES[key]).SURVEY


def available_surveys() -> list[str]:
    """Names of the registered surveys."""
    return sorted(SURVEY_MODULES)
