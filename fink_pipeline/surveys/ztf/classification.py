"""ZTF alert classification as the Data Transfer job computes it: `finkclass` and `tnsclass`.

`finkclass` reproduces `fink_filters.ztf.classification.extract_fink_classification_`
(reference section 3.1): eight boolean flags taken from the Fink filters, the labels written in
a fixed order (later wins), an ambiguity counter, then the SIMBAD label overriding everything.
`tnsclass` (the nearest TNS source's type) lives in `surveys.ztf.tns`; `surveys.ztf.classes`
computes both columns (`classify`, `classify_arrow`).

Two implementations of the same rules live here:

* Spark: native Column expressions (no Python UDF), used by the transfer job;
* Arrow/numpy: vectorised, used by the tests and the consumer side.

Null handling. Fink runs the rules as pandas UDFs, where Spark hands nulls over as NaN (numbers)
or None (strings). Pandas comparisons with NaN are False except `!=`, which is True; `isin` and
`==` on None are False. Both implementations follow exactly that, and NaN values stored in float
columns are treated like nulls (in Spark a raw NaN would compare greater than every number).
Where Fink itself would raise (`astype(int)` on a null `roid`/`ndethist`, `startswith` on a null
`cdsxmatch`), we keep the pandas comparison semantics instead of failing the job:
null `roid` is "not 3" and "not 2", null `ndethist` fails every threshold, and a null
`cdsxmatch` is neither a SIMBAD counterpart nor an extragalactic host.

pyspark is imported lazily so that this module imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # pyspark is heavy; only the Spark-side callables need it
    from pyspark.sql import Column

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

# fink_utils.xmatch.simbad.return_list_of_eg_host() (2026 snapshot, reference section 3.1):
# SIMBAD labels compatible with an extragalactic host, plus "no counterpart"/"failed xmatch".
_EG_NON_GALAXY = ("Unknown", "Candidate_SN*", "SN", "Transient", "Fail", "Fail 504", "SN*_Candidate")
_EG_GALAXIES = (
    "galaxy", "Galaxy", "EmG", "Seyfert", "Seyfert_1", "Seyfert_2", "BlueCompG", "StarburstG",
    "LSB_G", "HII_G", "High_z_G", "GinPair", "GinGroup", "BClG", "GinCl", "PartofG",
    "Compact_Gr_G", "IG", "PairG", "GroupG", "ClG", "SuperClG", "Void", "LINER",
    "Possible_ClG", "Possible_SClG", "GravLens_Candidate",
)  # fmt: skip
EXTRAGALACTIC_HOSTS: frozenset[str] = frozenset(_EG_NON_GALAXY + _EG_GALAXIES)

# cdsxmatch values meaning "no SIMBAD counterpart" (filter_simbad_candidates); in addition any
# value starting with "Fail" or "Galaxy" is not treated as a SIMBAD counterpart.
SIMBAD_NO_COUNTERPART: tuple[str, ...] = ("Unknown", "Transient", "Fail", "Fail 504")

# Labels produced by the rule itself (anything else is a raw SIMBAD otype from cdsxmatch).
UNKNOWN = "Unknown"
EARLY_SN_IA = "Early SN Ia candidate"
SN_CANDIDATE = "SN candidate"
KILONOVA = "Kilonova candidate"
MICROLENSING = "Microlensing candidate"
SSO_MPC = "Solar System MPC"
SSO_CANDIDATE = "Solar System candidate"
TRACKLET = "Tracklet"
AMBIGUOUS = "Ambiguous"
FINK_CLASS_LABELS: tuple[str, ...] = (
    UNKNOWN, EARLY_SN_IA, SN_CANDIDATE, KILONOVA, MICROLENSING,
    SSO_MPC, SSO_CANDIDATE, TRACKLET, AMBIGUOUS,
)  # fmt: skip

# The 13 inputs of extract_fink_classification_, in Fink's argument order.
FINKCLASS_INPUT_COLUMNS: tuple[str, ...] = (
    "cdsxmatch", "roid", "mulens", "snn_snia_vs_nonia", "snn_sn_vs_all", "rf_snia_vs_nonia",
    "candidate.ndethist", "candidate.drb", "candidate.classtar", "candidate.jd",
    "candidate.jdstarthist", "rf_kn_vs_nonkn", "tracklet",
)  # fmt: skip

# Label writing order of extract_fink_classification_ (later wins) ...
_LABEL_ORDER: tuple[tuple[str, str], ...] = (
    ("mulens", MICROLENSING),
    ("sn", SN_CANDIDATE),
    ("sn_early", EARLY_SN_IA),
    ("kn", KILONOVA),
    ("roid_2", SSO_CANDIDATE),
    ("tracklet", TRACKLET),
    ("roid_3", SSO_MPC),
)
# ... and the flags counted by the ambiguity counter (early SN, KN and tracklet are not).
_AMBIGUITY_FLAGS: tuple[str, ...] = ("mulens", "sn", "roid_2", "roid_3")


# --------------------------------------------------------------------------------------------
# finkclass: Spark
# --------------------------------------------------------------------------------------------


def as_number(name_or_col: "str | Column") -> "Column":
    """Column as double with NaN turned into null (pandas sees both as NaN)."""
    from pyspark.sql import functions as F

    c = F.col(name_or_col) if isinstance(name_or_col, str) else name_or_col
    c = c.cast("double")
    return F.nanvl(c, F.lit(None).cast("double"))


def fill_null(cond: "Column", when_null: bool = False) -> "Column":
    """Null-free boolean: pandas comparisons with NaN are False (True for `!=`)."""
    from pyspark.sql import functions as F

    return F.coalesce(cond, F.lit(when_null))


def finkclass_flag_columns(tracklet: "Column | None" = None) -> dict[str, "Column"]:
    """The eight Fink flags as null-free boolean Spark columns.

    Keys: tracklet, simbad, sn_early, sn, mulens, kn, roid_3, roid_2. Each flag is the exact
    rule of the Fink filter named in the reference (section 3.1), so a livestream filter that
    defines a Fink class selects exactly the alerts whose flag is true here. `tracklet`
    overrides the tracklet column (the `unknowns` filter runs the rule with an empty one).
    """
    from pyspark.sql import functions as F

    cds = F.col("cdsxmatch")
    roid = as_number("roid")
    ndethist = as_number("candidate.ndethist")
    drb = as_number("candidate.drb")
    classtar = as_number("candidate.classtar")
    age = F.nanvl(as_number("candidate.jd") - as_number("candidate.jdstarthist"), F.lit(None).cast("double"))
    snn1 = fill_null(as_number("snn_snia_vs_nonia") > 0.5)
    snn2 = fill_null(as_number("snn_sn_vs_all") > 0.5)
    high_drb = fill_null(drb > 0.5)
    high_classtar = fill_null(classtar > 0.4)
    eg_host = fill_null(cds.isin(*sorted(EXTRAGALACTIC_HOSTS)))
    not_mpc = fill_null(roid != 3, when_null=True)  # NaN != 3 is True in pandas
    # an all-null tracklet column may be read back as another type: compare as a string
    tracklet_col = (F.col("tracklet") if tracklet is None else tracklet).cast("string")

    return {
        # str(x).startswith("TRCK_"): a null tracklet is "None", so False
        "tracklet": fill_null(tracklet_col.startswith("TRCK_")),
        # cdsxmatch not in the no-counterpart list, not "Fail*" and not "Galaxy*"
        "simbad": fill_null(
            ~cds.isin(*SIMBAD_NO_COUNTERPART) & ~cds.startswith("Fail") & ~cds.startswith("Galaxy")
        ),
        # filter_early_sn_candidates
        "sn_early": (snn1 | snn2)
        & eg_host
        & high_drb
        & high_classtar
        & fill_null(ndethist <= 20)
        & fill_null(as_number("rf_snia_vs_nonia") > 0.5),
        # filter_sn_candidates
        "sn": (snn1 | snn2)
        & eg_host
        & fill_null(age <= 90)
        & high_drb
        & high_classtar
        & fill_null(ndethist > 1)
        & not_mpc,
        # filter_microlensing_candidates
        "mulens": fill_null(as_number("mulens") > 0.0),
        # filter_kn_candidates.kn_candidates_
        "kn": fill_null(as_number("rf_kn_vs_nonkn") > 0.5)
        & high_drb
        & high_classtar
        & fill_null(age < 5)
        & not_mpc
        & fill_null(ndethist < 20)
        & eg_host,
        # filter_sso_ztf_candidates / filter_sso_fink_candidates
        "roid_3": fill_null(roid == 3),
        "roid_2": fill_null(roid == 2),
    }


def finkclass_from_flags(flags: Mapping[str, "Column"]) -> "Column":
    """Combine the flags of `finkclass_flag_columns` as extract_fink_classification_ does.

    Labels in Fink's writing order (later wins), "Ambiguous" when more than one of
    microlensing / SN / Solar System flags is up, and the raw `cdsxmatch` wherever the SIMBAD
    flag is up.
    """
    from pyspark.sql import functions as F

    # "later wins" == the first true flag when the writing order is reversed
    label = None
    for flag, name in reversed(_LABEL_ORDER):
        branch = (F.when if label is None else label.when)
        label = branch(flags[flag], F.lit(name))
    label = label.otherwise(F.lit(UNKNOWN))
    ambiguity = sum(flags[flag].cast("int") for flag in _AMBIGUITY_FLAGS)
    return (
        F.when(flags["simbad"], F.col("cdsxmatch"))
        .when(ambiguity > 1, F.lit(AMBIGUOUS))
        .otherwise(label)
    )


def finkclass_column() -> "Column":
    """Spark column computing Fink's `finkclass` label (native expression, no UDF).

    Reads the 13 columns of `FINKCLASS_INPUT_COLUMNS`.
    """
    return finkclass_from_flags(finkclass_flag_columns())


# --------------------------------------------------------------------------------------------
# finkclass: Arrow / numpy
# --------------------------------------------------------------------------------------------


def arrow_field(table: pa.Table, path: str) -> pa.Array:
    """A (possibly nested, dotted) field of an Arrow table as one Array.

    A flat column literally named `path` wins; otherwise struct levels are descended
    (a null parent struct makes the child null).
    """
    if path in table.column_names:
        return table.column(path).combine_chunks()
    head, *rest = path.split(".")
    if head not in table.column_names:
        raise KeyError(f"column {path!r} not found in table (columns: {table.column_names})")
    arr = table.column(head).combine_chunks()
    for name in rest:
        arr = pc.struct_field(arr, name)
    return arr


def numeric_array(arr: pa.Array) -> np.ndarray:
    """Numeric Arrow array -> float64 numpy (nulls -> NaN), like pandas' astype(float)."""
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _np_bool(arr: pa.Array) -> np.ndarray:
    """Boolean Arrow array with nulls -> numpy bool (null -> False)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _np_isin(arr: pa.Array, values) -> np.ndarray:
    return _np_bool(pc.is_in(arr, value_set=pa.array(sorted(values), pa.string())))


def finkclass_flags_arrow(table: pa.Table, tracklet: pa.Array | None = None) -> dict[str, np.ndarray]:
    """The eight Fink flags as numpy bool arrays (same keys and rules as the Spark version)."""
    cds = pc.cast(arrow_field(table, "cdsxmatch"), pa.string())
    roid = numeric_array(arrow_field(table, "roid"))
    ndethist = numeric_array(arrow_field(table, "candidate.ndethist"))
    # astype(float) first: a float32 0.4 is 0.4000000059604645 > 0.4 (numpy would compare
    # a float32 array with 0.4 in float32)
    drb = numeric_array(arrow_field(table, "candidate.drb"))
    classtar = numeric_array(arrow_field(table, "candidate.classtar"))
    age = numeric_array(arrow_field(table, "candidate.jd")) - numeric_array(
        arrow_field(table, "candidate.jdstarthist")
    )
    with np.errstate(invalid="ignore"):
        snn = (numeric_array(arrow_field(table, "snn_snia_vs_nonia")) > 0.5) | (
            numeric_array(arrow_field(table, "snn_sn_vs_all")) > 0.5
        )
        high_drb = drb > 0.5
        high_classtar = classtar > 0.4
        eg_host = _np_isin(cds, EXTRAGALACTIC_HOSTS)
        not_mpc = roid != 3
        trk = pc.cast(arrow_field(table, "tracklet") if tracklet is None else tracklet, pa.string())
        simbad = (
            ~_np_isin(cds, SIMBAD_NO_COUNTERPART)
            & ~_np_bool(pc.starts_with(cds, "Fail"))
            & ~_np_bool(pc.starts_with(cds, "Galaxy"))
            & _np_bool(pc.is_valid(cds))
        )
        return {
            "tracklet": _np_bool(pc.starts_with(trk, "TRCK_")),
            "simbad": simbad,
            "sn_early": snn & eg_host & high_drb & high_classtar & (ndethist <= 20)
            & (numeric_array(arrow_field(table, "rf_snia_vs_nonia")) > 0.5),
            "sn": snn & eg_host & (age <= 90) & high_drb & high_classtar & (ndethist > 1) & not_mpc,
            "mulens": numeric_array(arrow_field(table, "mulens")) > 0.0,
            "kn": (numeric_array(arrow_field(table, "rf_kn_vs_nonkn")) > 0.5)
            & high_drb & high_classtar & (age < 5) & not_mpc & (ndethist < 20) & eg_host,
            "roid_3": roid == 3,
            "roid_2": roid == 2,
        }  # fmt: skip


def _finkclass_from_flags_np(flags: Mapping[str, np.ndarray], cdsxmatch: pa.Array) -> pa.Array:
    n = len(cdsxmatch)
    label = np.full(n, UNKNOWN, dtype=object)
    for flag, name in _LABEL_ORDER:  # later wins, as the successive pandas .mask calls
        label[flags[flag]] = name
    ambiguity = sum(flags[flag].astype(np.int64) for flag in _AMBIGUITY_FLAGS)
    label[ambiguity > 1] = AMBIGUOUS
    cds = pc.cast(cdsxmatch, pa.string()).to_numpy(zero_copy_only=False)
    label[flags["simbad"]] = cds[flags["simbad"]]
    return pa.array(label, type=pa.string())


def finkclass_arrow(table: pa.Table) -> pa.Array:
    """Fink's `finkclass` label for every row of an Arrow table (vectorised numpy/pyarrow).

    `table` holds the 13 inputs of `FINKCLASS_INPUT_COLUMNS`, nested (`candidate` struct) or
    as flat dotted column names.
    """
    flags = finkclass_flags_arrow(table)
    return _finkclass_from_flags_np(flags, arrow_field(table, "cdsxmatch"))
