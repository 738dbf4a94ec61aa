"""Synthetic ZTF alerts as Fink stores them (one night of the science archive).

`generate_night(night, n_alerts, seed)` yields Arrow record batches with exactly
`ARCHIVE_SCHEMA`: ZTF 4.02 packets (candidate, 30-day prv_candidates history, three gzipped FITS
cutouts) plus the values Fink adds (cross-matches, classifier scores, light-curve features...).
Value distributions and null rates are calibrated on the real samples of ../shared/data
(see `scripts/calibrate_ztf_generator.py` and `docs/generator_calibration.md`).

Design
------
* Deterministic and batch-size independent: a night is cut into fixed blocks of `BLOCK_SIZE`
  alerts; each block has its own random stream derived from (seed, night, block), and batches
  are re-chunked from blocks. The cutouts use a separate stream, so every non-cutout column is
  byte-identical with and without cutouts.
* Vectorised: every scalar column is computed with numpy on whole blocks; strings are built as
  fixed-width byte matrices or with pyarrow.compute; list/struct/map columns are assembled from
  flat arrays (`ListArray.from_arrays`, `StructArray.from_arrays`, `MapArray.from_arrays`).
* A sky and a night plan: fields on a ZTF-like grid (~570 fields of 7.4 x 7.4 deg, 64 readout
  quadrants), a night of ~40 s exposures between evening and morning twilight at Palomar, each
  exposure on a field near the meridian. candidate.jd, pid, candid, field, rcid, xpos/ypos and
  ra/dec are mutually consistent (pid = nid|fraction of day|rcid|15, candid = pid * 10^6 + 10000
  + tblid, as real ZTF ids), hence candid is unique within and across nights.
* Objects: known variable sources (SIMBAD and unclassified) live in a per-field pool keyed by
  hashes of the seed only, so the same objectId (same position, first detection, reference
  source and cross-matches) comes back night after night and several times within a night;
  supernova-like transients are keyed by (field, birth day); bogus, asteroids and satellite
  tracklets get a fresh objectId.
* History: 30 days of detections and upper limits (null photometry) consistent with
  candidate.ndethist / jdstarthist / nalerthist; light-curve features and rates computed from it.
* Cutouts: per night a pool of consistent science/template/difference FITS images; each alert
  gets its own copy with random low-order mantissa bits, gzipped (unique bytes, real sizes).
* Classes: every alert is planted with a target `finkclass` (reference section 3.1) drawn with
  realistic fractions (section 7.1) and floors, so each Fink label and the main SIMBAD labels
  appear at least once per `BLOCK_SIZE` alerts; the classifier scores are then adjusted so that
  the alert satisfies exactly the rule of its class. The block generator checks its own output
  against an implementation of the rule and raises if a planted class is not reproduced.
"""

from __future__ import annotations

from fink_pipeline.surveys.ztf.generator.constants import BLOCK_SIZE, FINK_LABELS, LABELS
from fink_pipeline.surveys.ztf.generator.night import generate_night

__all__ = ["BLOCK_SIZE", "FINK_LABELS", "LABELS", "generate_night"]
