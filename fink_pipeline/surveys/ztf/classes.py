"""ZTF classes: the class columns of an alert and what a transfer request's class list means.

`classify` / `classify_arrow` add `finkclass` (`surveys.ztf.classification`) and `tnsclass`
(`surveys.ztf.tns`) in Spark or Arrow.

Fink's rules (reference section 3): a `(TNS) <type>` label selects on `tnsclass`, any other label
(a Fink class, a SIMBAD type, bare or as `(SIMBAD) <type>`) on `finkclass`; several labels are
ORed. The same rule is written once here for Spark (`spark_filter`), for counts of nightly
statistics and samples (`mask`) and for checking a request (`validate`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Mapping, Sequence

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.base import ClassError, suggest_label
from fink_pipeline.surveys.ztf import filters as FL
from fink_pipeline.surveys.ztf.classification import (
    EXTRAGALACTIC_HOSTS,
    FINK_CLASS_LABELS,
    FINKCLASS_INPUT_COLUMNS,
    SIMBAD_NO_COUNTERPART,
    UNKNOWN,
    arrow_field,
    finkclass_arrow,
    finkclass_column,
)
from fink_pipeline.surveys.ztf.tns import TNS_PREFIX, prepare_tns_catalog, tnsclass_arrow, with_tnsclass

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SIMBAD_PREFIX = "(SIMBAD) "


def classify(df: "DataFrame", tns_catalog_df: "DataFrame | pa.Table | None" = None) -> "DataFrame":
    """Add `finkclass` and `tnsclass` to an archive DataFrame, as the ZTF transfer job does.

    `tns_catalog_df`: TNS catalogue (Spark DataFrame, Arrow table from `load_tns_catalog`, or
    None for `tnsclass` = "Unknown" everywhere).
    """
    return with_tnsclass(df.withColumn("finkclass", finkclass_column()), tns_catalog_df)


def classify_arrow(table: pa.Table, tns_catalog: pa.Table | None = None) -> dict[str, pa.Array]:
    """Arrow version of `classify`: {"finkclass": ..., "tnsclass": ...}."""
    if tns_catalog is None:
        tns = pa.array([UNKNOWN] * table.num_rows, type=pa.string())
    else:
        ra, dec = arrow_field(table, "candidate.ra"), arrow_field(table, "candidate.dec")
        tns = tnsclass_arrow(ra, dec, tns_catalog)
    return {"finkclass": finkclass_arrow(table), "tnsclass": tns}


def _split(classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """(finkclass values, tnsclass values) a class list selects."""
    tns = [c for c in classes if c.startswith(TNS_PREFIX)]
    fink = [c.removeprefix(SIMBAD_PREFIX) for c in classes if not c.startswith(TNS_PREFIX)]
    return fink, tns


def _simbad_otypes() -> frozenset[str]:
    """SIMBAD types the ZTF rules themselves name (valid labels even before any statistics)."""
    named = set(EXTRAGALACTIC_HOSTS) | set(FL.BLAZAR_LABELS) | set(FL.YSO_LABELS) | set(FL.GRAVITATION_LABELS)
    # these never become a finkclass: no counterpart, failed cross-match, or a galaxy
    return frozenset(n for n in named if n not in SIMBAD_NO_COUNTERPART and not n.startswith(("Fail", "Galaxy")))


class ZtfClassRules:
    """Fink's ZTF labels: finkclass (Fink, SIMBAD) and tnsclass (TNS, from a catalogue)."""

    uses_tns = True
    inputs: tuple[str, ...] = tuple(dict.fromkeys(FINKCLASS_INPUT_COLUMNS + ("candidate.ra", "candidate.dec")))

    @staticmethod
    def prepare_tns_catalog(catalog):
        """The catalogue the tnsclass is computed with (idempotent on a prepared one)."""
        if "_tns_index" in getattr(catalog, "column_names", ()):
            return catalog
        return prepare_tns_catalog(catalog)

    @staticmethod
    def needs_tns(classes: Sequence[str]) -> bool:
        """True when a label selects on tnsclass (which is 'Unknown' without a catalogue)."""
        return any(c.startswith(TNS_PREFIX) for c in classes)

    @staticmethod
    def spark_filter(classes: Sequence[str]) -> "Column":
        """Spark condition keeping alerts of `classes`."""
        from pyspark.sql import functions as F

        fink, tns = _split(classes)
        condition = F.col("finkclass").isin(fink) if fink else None
        if tns:
            on_tns = F.col("tnsclass").isin(tns)
            condition = on_tns if condition is None else (condition | on_tns)
        return condition

    @staticmethod
    def mask(values: Mapping[str, Sequence], classes: Sequence[str], n: int) -> np.ndarray:
        """Which of `n` rows (finkclass and tnsclass values) `classes` keep."""
        fink, tns = (set(part) for part in _split(classes))
        mask = np.fromiter((v in fink for v in values["finkclass"]), bool, n)
        if tns:
            mask |= np.fromiter((v in tns for v in values["tnsclass"]), bool, n)
        return mask

    @staticmethod
    def validate(classes: Sequence[str], seen_labels: Collection[str] = (),
                 tns_types: Collection[str] | None = None) -> list[str]:
        """Check class names; raise ClassError naming the first unknown one and the closest label.

        Returns the warnings, which do not stop the request:

        * a Fink label (Unknown, SN candidate, ...) is always valid;
        * `(TNS) <type>`: with a TNS catalogue, `<type>` must be one of its types; without one it
          is accepted with a warning, since every alert's tnsclass is then "Unknown";
        * a SIMBAD type, bare or as `(SIMBAD) <type>`: valid when the nightly statistics
          (`seen_labels`) have seen it. A type the classification rules name (e.g. a galaxy or
          blazar type) that no statistics has seen is accepted with a warning;
        * any other bare label is an error with the closest known label, while `(SIMBAD) <type>`
          (explicitly a SIMBAD type, which may just not have occurred yet) is accepted with a
          warning unless it is a near miss of a known label (e.g. a wrong case), an error;
        * without any statistics (never computed) labels cannot be checked: they are accepted
          with a warning, unless they are a near miss of a Fink label, an error.
        """
        seen, named = set(seen_labels), _simbad_otypes()
        warnings: list[str] = []
        for label in classes:
            if label in FINK_CLASS_LABELS:
                continue
            if label.startswith(TNS_PREFIX.strip()):
                warnings += _check_tns_label(label, tns_types)
            else:
                warnings += _check_simbad_label(label, seen, named)
        return warnings


def _check_tns_label(label: str, tns_types: Collection[str] | None) -> list[str]:
    kind = label[len(TNS_PREFIX.strip()):].strip()
    if not label.startswith(TNS_PREFIX) or not kind:
        raise ClassError(f"classes: {label!r} is not a TNS class; write it as '(TNS) <type>', e.g. '(TNS) SN Ia'")
    if tns_types is None:
        return [f"classes: {label!r} needs a TNS catalogue and none is configured: every alert's "
                "tnsclass is 'Unknown', so it selects nothing"]
    if label not in tns_types:
        raise ClassError(f"classes: {label!r} is not a type of the TNS catalogue" + suggest_label(label, tns_types))
    return []


def _check_simbad_label(label: str, seen: set[str], named: frozenset[str]) -> list[str]:
    name = label.removeprefix(SIMBAD_PREFIX).strip() if label.startswith(SIMBAD_PREFIX) else label
    if not name:
        raise ClassError(
            f"classes: {label!r} names no SIMBAD type; write it as '(SIMBAD) <type>', e.g. '(SIMBAD) RRLyr'")
    if name in seen:
        return []
    if name in named:
        return [f"classes: no alert of class {label!r} in the nightly statistics so far"]
    fink = set(FINK_CLASS_LABELS)
    if not seen:
        near = suggest_label(name, fink)
        if near:
            raise ClassError(f"classes: {label!r} is not a Fink class" + near)
        return [f"classes: {label!r} cannot be checked: no nightly statistics yet (materialize "
                "night_statistics); it is kept as a SIMBAD type"]
    choices = fink | seen | named
    if label.startswith(SIMBAD_PREFIX) and not suggest_label(name, choices, cutoff=0.8):
        return [f"classes: {label!r} does not occur in the nightly statistics so far: it selects nothing yet"]
    raise ClassError(f"classes: unknown class {label!r}" + (
        suggest_label(name, choices) or "; use a Fink label, '(SIMBAD) <type>' or '(TNS) <type>'"))


ZTF_CLASS_RULES = ZtfClassRules()
