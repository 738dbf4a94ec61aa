"""Constants of the synthetic Rubin generator (pure data): versions, Cerro Pachon site, bands
and depths, field grid, populations and Fink class vocabularies.
"""

from __future__ import annotations

import numpy as np

from fink_pipeline.surveys.lsst.schema import DIA_SOURCE

BLOCK_SIZE = 1000
MJD_UNIX_EPOCH = 40587.0
SCHEMA_VERSION = "lsst.v10_0"
FINK_BROKER_VERSION = "4.1"
FINK_SCIENCE_VERSION = "8.39.0"
PUBLISHER = "Fink"

#: Cerro Pachon longitude: local solar midnight at 04:43 UTC.
PACHON_LON_DEG = -70.7366
PACHON_LAT_DEG = -30.2407
MIDNIGHT_UTC_H = 24.0 * (-PACHON_LON_DEG / 360.0)
VISIT_SECONDS = 34.0
#: Exposure of a visit: a source moving at 1 deg/day trails 1.25 arcsec.
EXPOSURE_SECONDS = 30.0
BANDS = ("u", "g", "r", "i", "z", "y")
#: Visits per band over the survey (Rubin baseline cadence, roughly).
BAND_WEIGHTS = np.array([0.07, 0.09, 0.22, 0.22, 0.20, 0.20])
#: 5-sigma depth of the difference images (AB mag) per band: Rubin's design single-visit depths
#: made 0.9 mag shallower, as the samples' i-band psfFluxErr (p50 491 nJy, i.e. i = 23.0) show.
BAND_DEPTH = np.array([23.0, 24.1, 23.8, 23.1, 22.4, 21.2])
N_DETECTORS = 189
FIELDS_DEC = np.arange(-87.0, 8.0, 3.5)  # field centres every 3.5 deg in dec...
#: Static objects per field pool.
POOL_PER_FIELD = 4000
FRACTION_SSO = 0.046  # b_is_solar_system yield (reference 7.3)
FRACTION_NEW = 0.173  # b_is_new yield 0.219, which counts the asteroids too (first seen = now)
#: Fast near-Earth objects among asteroid detections (long trails; ~3x their real share, so that
#: Fink's faint_trails filter has a few alerts a night).
FRACTION_NEO = 0.03
#: Young fast-rising transients (a floor of 0.1 %, above their real share: Fink's fast-transient
#: filters need a few a night).
FRACTION_FAST = 0.001
#: Fink CATS broad classes (11 SN-like, 12 fast, 13 long, 21 periodic, 22 non-periodic, ...).
CATS_CLASSES = np.array([11, 12, 13, 21, 22, 221])
TNS_TYPES = ("SN Ia", "SN II", "SN IIn", "SN Ic", "TDE", "CV")
AB_ZERO_NJY = 3631e9  # flux of AB mag 0 in nJy

# a tuple, in schema order: random draws happen per field, and a set's order changes with
# Python's hash seed (the same seed gave other alerts in another process)
_DIA_SOURCE_FIELDS = tuple(f.name for f in DIA_SOURCE)
