"""Synthetic Rubin (LSST) alerts as Fink archives them (one night, exactly `ARCHIVE_SCHEMA`).

Packets follow lsst.v10_0 (the version of Fink's 2026 Data Transfer sample): the fields of
older or newer versions that the unified schema also holds stay null, as they would in a real
v10 night. Fink's added values (`clf`, `xm`, `pred`, `misc`, `lc_features`,
`tns_type_recomputed`) are filled as Fink 4.1 / science 8.39 writes them. Distributions are
calibrated on the Rubin samples of ../shared/data and the portal yields of reference 7.3 (see
docs/generator_calibration.md).

Design (as the ZTF generator):

* Deterministic and batch-size independent: a night is cut into blocks of `BLOCK_SIZE` alerts,
  each with its own random stream from (seed, night, block); the cutouts use separate streams,
  so every other column is identical with and without cutouts.
* Vectorised: numpy on whole blocks; nested columns assembled from flat arrays.
* Night plan: the UTC date D holds the end of the Cerro Pachon night that began on D-1 and the
  start of the next one (local midnight ~04:43 UTC, night half-length 4.3-5.5 h by season);
  ~34 s visits, each on one of ~1,900 southern fields within 3 h of the meridian (airmass median
  1.15, 18 % above 1.3), one band per visit.
* Objects: static objects live in a per-field pool keyed by the seed only (same diaObjectId,
  position and class night after night); 17.3 % of alerts are a first detection (new object,
  empty history, Fink `is_first`), 4.6 % are solar-system detections (no diaObject, `ssSource` +
  `mpc_orbits`), so that Fink's b_is_new (first seen now, asteroids included) and
  b_is_solar_system yield as on the portal.
* Populations (`populations`): variable stars (crowding the Galactic plane), flaring M dwarfs
  (u/g), AGN, supernovae in hosts (redshift from peak brightness), hostless transients and
  artefacts, plus a few fast near-Earth objects (long trails) and young fast-rising transients,
  so that every Fink Rubin filter and block selects some alerts of a night, none all of them
  (docs/generator_calibration.md lists the yields of Fink's own functions).
* History: prvDiaSources (the object's earlier detections on its light curve, same-band
  templates and colours)/prvDiaForcedSources of up to a year, consistent with diaObject's
  per-band aggregates and Fink's light-curve features.
* Cutouts: uncompressed 30x30 float32 FITS stamps (Rubin sends plain FITS), 34-46 kB each,
  from a per-night pool with a per-alert header card, hence unique bytes; asteroids and bright
  sources get their own PSF (trailed for asteroids) with their flux.

Modules, in the order a block draws from its stream: `night_plan` (visits of the night),
`alerts` (identity, position, class, photometry; `populations`), `dia_source`, `history`
(previous and forced sources, diaObject, light-curve features; `solar_system` records),
`fink_values`, then `cutouts` on their own stream; `block` assembles a block and `night`
re-chunks the blocks. `streams`, `arrays` and `constants` hold the random streams, Arrow
builders and constants.
"""

from __future__ import annotations

from fink_pipeline.surveys.lsst.generator.arrays import (
    list_array,
    rechunk,
    strings,
    struct_array,
    timestamps_from_mjd,
    vocab,
)
from fink_pipeline.surveys.lsst.generator.constants import BANDS, BLOCK_SIZE, SCHEMA_VERSION
from fink_pipeline.surveys.lsst.generator.night import generate_night
from fink_pipeline.surveys.lsst.generator.night_plan import mjd_of_night, observing_hours
from fink_pipeline.surveys.lsst.generator.streams import block_rng

__all__ = [
    "BANDS",
    "BLOCK_SIZE",
    "SCHEMA_VERSION",
    "block_rng",
    "generate_night",
    "list_array",
    "mjd_of_night",
    "observing_hours",
    "rechunk",
    "strings",
    "struct_array",
    "timestamps_from_mjd",
    "vocab",
]
