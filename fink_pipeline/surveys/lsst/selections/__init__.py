"""Fink's Rubin live-stream filters and building blocks as native Spark expressions.

Fink's LSST transfer job applies each requested filter or block as
`df.filter(FinkUDF(func, BooleanType(), tag).for_spark(*cols))`, the pandas function of
fink-filters 7.45 (`fink_filters.rubin.livestream.filter_<tag>.filter.<tag>`, or
`fink_filters.rubin.blocks.<b_name>`) fed the archive columns its argument names denote. Here
each is a `SelectionFunction` whose column is a Spark expression (higher-order functions on
`prvDiaSources`, no Python UDF but the cutout measurement of `faint_trails`), proven equal to
Fink's code by fink_pipeline_tests/test_compat_fink_filters.py.

Modules: `columns` (pandas null/NaN/float32 semantics in Spark), `labels` (fink-utils' SIMBAD
and VSX lists), `sky` (galactic latitude, airmass at Cerro Pachon), `cosmology` (luminosity
distance), `lightcurve` (per-band lookups, previous sources), `cutouts` (faint_trails'
elongation), `blocks` and `filters` (the functions, each module's docstring lists the quirks of
Fink's code kept and the few differences).
"""

from __future__ import annotations

import difflib

from fink_pipeline.surveys.base import SelectionFunction, filter_name_candidates
from fink_pipeline.surveys.lsst.selections.blocks import BLOCKS, BLOCKS_MODULE
from fink_pipeline.surveys.lsst.selections.filters import FILTERS, LIVESTREAM_PACKAGE

RUBIN_FILTERS: dict[str, SelectionFunction] = {f.name: f for f in FILTERS}
RUBIN_BLOCKS: dict[str, SelectionFunction] = {b.name: b for b in BLOCKS}


def _block_keys(query: str) -> list[str]:
    """Block names `query` may denote: `b_<name>`, `<name>` or `fink_filters.rubin.blocks.b_<name>`."""
    q = query.strip().rsplit(".", 1)[-1]
    return [q, f"b_{q}"]


def _unknown(kind: str, query: str, key: str, choices: list[str], other: dict[str, SelectionFunction],
             other_kind: str) -> ValueError:  # fmt: skip
    """ValueError naming the closest valid names (or the other registry holding the name)."""
    for candidate in (key, f"b_{key}", key.removeprefix("b_")):
        if candidate in other:
            return ValueError(f"{query!r} is a Rubin {other_kind}, not a {kind}: list it under "
                              f"{other_kind}s as {candidate!r}")  # fmt: skip
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ValueError(f"unknown Rubin {kind} {query!r}: {hint}valid names: {', '.join(choices)}")


def resolve_rubin_filter(name_or_module_path: str) -> SelectionFunction:
    """The Rubin live-stream filter named by a short name (`in_tns`), `filter_in_tns` or the
    module path Fink's job imports (`fink_filters.rubin.livestream.filter_in_tns.filter.in_tns`,
    or its module without the function). ValueError with the closest names otherwise."""
    if not isinstance(name_or_module_path, str) or not name_or_module_path.strip():
        raise ValueError(f"empty filter name; valid names: {', '.join(sorted(RUBIN_FILTERS))}")
    for key in filter_name_candidates(name_or_module_path):
        if key in RUBIN_FILTERS:
            return RUBIN_FILTERS[key]
    key = name_or_module_path.strip().rsplit(".", 1)[-1].removeprefix("filter_")
    raise _unknown("filter", name_or_module_path, key, sorted(RUBIN_FILTERS), RUBIN_BLOCKS, "block")


def resolve_rubin_block(name_or_module_path: str) -> SelectionFunction:
    """The Rubin block named `b_is_new`, `is_new` or `fink_filters.rubin.blocks.b_is_new`.
    ValueError with the closest names otherwise."""
    if not isinstance(name_or_module_path, str) or not name_or_module_path.strip():
        raise ValueError(f"empty block name; valid names: {', '.join(sorted(RUBIN_BLOCKS))}")
    for key in _block_keys(name_or_module_path):
        if key in RUBIN_BLOCKS:
            return RUBIN_BLOCKS[key]
    key = name_or_module_path.strip().rsplit(".", 1)[-1]
    raise _unknown("block", name_or_module_path, key, sorted(RUBIN_BLOCKS), RUBIN_FILTERS, "filter")


__all__ = [
    "BLOCKS_MODULE",
    "LIVESTREAM_PACKAGE",
    "RUBIN_BLOCKS",
    "RUBIN_FILTERS",
    "resolve_rubin_block",
    "resolve_rubin_filter",
]
