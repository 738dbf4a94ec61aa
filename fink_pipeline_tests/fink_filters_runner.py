"""Apply every Rubin filter and block of fink-filters the way Fink's LSST transfer job does.

Run by fink_pipeline_tests/test_compat_fink_filters.py with the interpreter of
`.venv-compat-filters` (fink-filters 7.45, fink-utils 0.79.0, astropy, pyspark 4.3, pandas < 3,
scipy); it imports nothing of fink_pipeline.

    python fink_filters_runner.py INPUT.parquet OUTPUT.json

For each `fink_filters.rubin.livestream.filter_<tag>.filter.<tag>` and each
`fink_filters.rubin.blocks.b_*`, as `spark_lsst_transfer.py` does:

    func, cols = expand_function_from_string(df, module_path)
    df.filter(FinkUDF(func, BooleanType(), tag).for_spark(*cols))

and writes the selected diaSourceIds per name, or why the name could not run on this input
(an argument with no matching column, or the error Fink's code raised). Also written: Fink's
descriptions, each argument's column, and the fink-utils label lists, for the test to compare.

Offline astropy (no IERS or site download; the machine has no route to astropy's servers):
`iers.conf.auto_download = False` (astropy uses the IERS-A table bundled in astropy-iers-data
instead of fetching the latest; UT1-UTC and polar motion come from its values and predictions),
`iers.conf.auto_max_age = None` (no "table too old" error; the bundled predictions are used as
they are) and `iers_degraded_accuracy = "warn"` (times past the table warn instead of failing).
`EarthLocation.of_site("Cerro Pachon")` is answered from the astropy-data `sites.json` entry the
name resolves to (gemini_south, astropy/astropy-data@1ec3f59) set as astropy's site registry
instead of downloaded. The same configuration runs in each Python worker before Fink's
function (a wrapper around it; the function and its columns are Fink's).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import sys
import traceback

# astropy-data coordinates/sites.json, entry "gemini_south" (aliases include "Cerro Pachon")
CERRO_PACHON_SITE = {
    "gemini_south": {
        "source": "CTIO Website", "elevation": 2750, "name": "Gemini South", "longitude_unit": "degree",
        "latitude_unit": "degree", "latitude": -30.24074166666667, "elevation_unit": "meter",
        "longitude": 289.2633166666667, "timezone": "Chile/Continental",
        "aliases": ["Cerro Pachon", "Gemini South", "gems"],
    }
}  # fmt: skip


def configure_astropy() -> None:
    """Offline astropy, see the module docstring (idempotent, cheap)."""
    import warnings

    from astropy.coordinates import EarthLocation
    from astropy.coordinates.sites import SiteRegistry
    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    iers.conf.iers_degraded_accuracy = "warn"
    if not EarthLocation._site_registry:
        EarthLocation._site_registry = SiteRegistry.from_json(CERRO_PACHON_SITE)
    warnings.filterwarnings("ignore", module="astropy")
    warnings.filterwarnings("ignore", module="erfa")


def offline(func):
    """Fink's function, run after `configure_astropy` in the worker (same name and signature)."""

    def wrapper(*args):
        configure_astropy()
        return func(*args)

    wrapper.__name__ = func.__name__
    return wrapper


def rubin_functions() -> dict[str, tuple[str, str]]:
    """name -> (module path Fink's job imports, description) for every filter and block."""
    import fink_filters.rubin.blocks as blocks
    import fink_filters.rubin.livestream as livestream

    out = {}
    for info in pkgutil.iter_modules(livestream.__path__):
        if not info.name.startswith("filter_"):
            continue
        tag = info.name.removeprefix("filter_")
        module = importlib.import_module(f"fink_filters.rubin.livestream.{info.name}.filter")
        out[tag] = (f"{module.__name__}.{tag}", getattr(module, "DESCRIPTION", "") or "")
    for name, func in inspect.getmembers(blocks, inspect.isfunction):
        if name.startswith("b_") and func.__module__ == blocks.__name__:
            summary = (func.__doc__ or "").strip().splitlines()[0]
            out[name] = (f"{blocks.__name__}.{name}", summary)
    return out


def labels() -> dict[str, list]:
    from fink_filters.rubin.blocks import BAD_VALUES
    from fink_utils.xmatch.simbad import return_list_of_eg_host
    from fink_utils.xmatch.vsx import return_list_of_nonstellar, return_list_of_stellar

    return {
        "eg_host": [str(x) for x in return_list_of_eg_host()],
        "vsx_stellar": list(return_list_of_stellar()),
        "vsx_nonstellar": list(return_list_of_nonstellar()),
        "bad_values": [x if isinstance(x, str) else repr(x) for x in BAD_VALUES],
    }


def run(path: str) -> dict:
    from fink_utils.spark.utils import FinkUDF, expand_function_from_string
    from pyspark.sql import SparkSession
    from pyspark.sql.types import BooleanType

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[2]").appName("fink-filters-compat")
             .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.memory", "2g")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
             .getOrCreate())  # fmt: skip
    spark.sparkContext.setLogLevel("ERROR")
    configure_astropy()
    df = spark.read.parquet(path)
    results = {}
    for name, (module_path, description) in sorted(rubin_functions().items()):
        entry = {"module": module_path, "description": description}
        try:
            func, cols = expand_function_from_string(df, module_path)
        except Exception as exc:  # an argument names no column of this input
            entry.update(status="missing", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            results[name] = entry
            continue
        entry["columns"] = [str(c) for c in cols]
        try:
            udf = FinkUDF(offline(func), BooleanType(), name).for_spark(*cols)
            rows = df.filter(udf).select("diaSourceId").collect()
            entry.update(status="ok", ids=sorted(int(r[0]) for r in rows))
        except Exception as exc:
            lines = traceback.format_exception_only(type(exc), exc)
            entry.update(status="error", error=" ".join(" ".join(lines).split())[-1500:])
        results[name] = entry
    rows = df.count()
    spark.stop()
    return {"input": path, "rows": rows, "results": results, "labels": labels()}


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    out = run(source)
    with open(target, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
