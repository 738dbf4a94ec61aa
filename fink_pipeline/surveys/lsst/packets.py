"""Fink's LSST Data Transfer packets (reference 9.1; lsst.fink-portal.org `assets/spark_lsst_transfer.py`).

"Full packet" (every column), "Medium packet" (no cutouts), "Light static packet" (the
photometry and astrometry of the triggering diaSource flattened to the root, then every root
column but the cutouts and the source, object and orbit sections: Fink's added values and
`tns_type_recomputed` included; the portal called it "Light packet" until April 2026, and
exports of that time keep the name) and "Light SSO packet" (a few fields for solar-system
studies, root columns named after their last part, as Fink's `selectExpr` names them).
"""

from __future__ import annotations

from fink_pipeline.surveys.lsst.schema import CUTOUT_COLUMNS
from fink_pipeline.surveys.packets import Packet, fink_packets

# diaSource photometry and astrometry both light packets publish (each under its own name)
_LIGHT_DIA_SOURCE = tuple(
    f"diaSource.{name}"
    for name in (
        "snr", "psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr", "templateFlux", "templateFluxErr",
        "band", "midpointMjdTai", "ra", "dec", "reliability",
    )
)  # fmt: skip

LIGHT_SSO = Packet(
    "light_sso", ("Light SSO packet",),
    "the alert id, ssSource ids and phase, the diaSource photometry and astrometry, the MPC designations",
    fields=(
        "diaSourceId", "ssSource.ssObjectId", "ssSource.phaseAngle", "ssSource.diaDistanceRank", *_LIGHT_DIA_SOURCE,
        "mpc_orbits.packed_primary_provisional_designation", "mpc_orbits.unpacked_primary_provisional_designation",
        "lsst_schema_version", "fink_broker_version", "fink_science_version",
    ),
)  # fmt: skip

PACKETS = fink_packets(
    CUTOUT_COLUMNS,
    light_fields=("diaSource.diaObjectId", *_LIGHT_DIA_SOURCE),
    light_excludes=(
        "diaSource", "prvDiaSources", "prvDiaForcedSources", "diaObject", "ssSource", "MPCORB", "mpc_orbits",
        # sections of older Rubin schemas (lsst.v7_4)
        "prvDiaNondetectionLimits", "ssObject",
    ),
    light_portal_names=("Light static packet", "Light packet"),
    light_description="the diaSource photometry and astrometry, then every root column but cutouts and sections",
    extra=(LIGHT_SSO,),
)  # fmt: skip
