"""The one image measurement of the Rubin filters: the elongation of `faint_trails`.

`faint_trails` keeps an alert whose science cutout shows an elongated source. Fink decodes the
FITS bytes of the rows that passed its cheap cuts and measures the second moments of the
significant pixels (`filter_faint_trails/utils.py::compute_elongation_from_image`). Here the
cheap cuts are Spark expressions and a vectorised pandas UDF measures the cutouts it is given;
the job feeds it null for every other row (`when(cuts, cutoutScience)`), so it decodes only the
few cutouts Fink decodes.

`elongation_from_image` is fink-filters 7.45's `compute_elongation_from_image` (Apache-2.0,
AstroLab Software), copied unchanged so that the numbers are Fink's to the last bit.
Difference: a cutout that is not readable FITS makes Fink's job fail; here it is not a trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd  # the UDF's type hints must resolve (imported only by faint_trails' builder)

if TYPE_CHECKING:
    from pyspark.sql import Column

ELONGATION_MIN = 2.0


def elongation_from_image(data):
    """Robust elongation using thresholded significant pixels (Fink's function, unchanged)."""
    if data is None:
        return np.nan

    try:
        data = np.nan_to_num(data).astype(float)
    except (TypeError, ValueError):
        return np.nan

    if data.ndim != 2:
        return np.nan

    # Estimate noise using MAD
    median = np.median(data)
    mad = np.median(np.abs(data - median))
    sigma = 1.4826 * mad if mad > 0 else np.std(data)

    # Threshold: keep only significant pixels
    threshold = median + 3 * sigma
    mask = data > threshold

    # If too few pixels -> skip
    if np.sum(mask) < 5:
        return np.nan

    # Use ONLY significant pixels
    y, x = np.where(mask)
    weights = data[mask]

    # Centroid
    total = np.sum(weights)
    if total == 0:
        return np.nan
    x_c = np.sum(x * weights) / total
    y_c = np.sum(y * weights) / total

    dx = x - x_c
    dy = y - y_c

    ixx = np.sum(weights * dx * dx) / total
    iyy = np.sum(weights * dy * dy) / total
    ixy = np.sum(weights * dx * dy) / total

    M = np.array([[ixx, ixy], [ixy, iyy]])

    try:
        eigvals = np.linalg.eigvals(M)
    except np.linalg.LinAlgError:
        return np.nan

    l1, l2 = np.max(eigvals), np.min(eigvals)

    if l2 <= 0:
        return np.nan

    elongation = np.sqrt(l1 / l2)

    return float(elongation)


def cutout_is_elongated(cutout: bytes | None) -> bool:
    """True when the FITS cutout's elongation exceeds 2 (False for null or unreadable bytes)."""
    import io

    from astropy.io import fits

    if not isinstance(cutout, (bytes, bytearray)):
        return False
    try:
        data = fits.getdata(io.BytesIO(cutout))
    except Exception:  # noqa: BLE001 - any undecodable cutout is "not a trail", not a failed job
        return False
    elongation = elongation_from_image(data)
    return bool(elongation > ELONGATION_MIN)  # NaN -> False, as Fink's fillna(False)


def elongated_batch(cutouts: pd.Series) -> pd.Series:
    """The pandas UDF body: one boolean per cutout, null cutouts cost nothing."""
    return pd.Series([cutout_is_elongated(c) if c is not None else False for c in cutouts], index=cutouts.index,
                     dtype=bool)  # fmt: skip


def elongated(cutout: "Column") -> "Column":
    """Spark column: the science cutout shows an elongated source (a vectorised Arrow UDF; pass
    null for the rows that need no measurement)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    udf = F.pandas_udf(elongated_batch, BooleanType())
    return F.coalesce(udf(cutout), F.lit(False))
