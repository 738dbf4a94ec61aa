"""Luminosity distance of astropy's `FlatLambdaCDM(H0=70, Om0=0.3)` as Spark arithmetic.

Fink's `sn_near_galaxy_candidate` turns a photometric redshift into an absolute magnitude with
`FlatLambdaCDM(H0=70, Om0=0.3).luminosity_distance(z)` (Tcmb0 = 0: no radiation, no neutrinos).
The comoving distance is D_H * integral_0^z dz' / E(z'), E(z) = sqrt(Om (1 + z)^3 + 1 - Om).
With a = 1 / (1 + z) and a = s^2 it becomes D_H * integral_{1/sqrt(1+z)}^1 2 ds / sqrt(Om + OL s^6),
an integrand smooth on [0, 1] for every z >= 0, integrated here with a fixed 24-point
Gauss-Legendre rule written as Spark arithmetic (no UDF). Agreement with astropy (which
evaluates a hypergeometric function with scipy), measured in
fink_pipeline_tests/test_rubin_selections.py: relative difference below 3e-14 for
0.01 <= z <= 1000, 3e-13 at z = 0.001, 4e-10 at z = 1e-6 (1e-9 mag in the distance modulus).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from fink_pipeline.surveys.lsst.selections.columns import let

if TYPE_CHECKING:
    from pyspark.sql import Column

H0_KM_S_MPC = 70.0
OMEGA_M = 0.3
SPEED_OF_LIGHT_KM_S = 299792.458
HUBBLE_DISTANCE_MPC = SPEED_OF_LIGHT_KM_S / H0_KM_S_MPC
QUADRATURE_POINTS = 24


@lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights on [-1, 1] (numpy's, computed once)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)
    return tuple(float(x) for x in nodes), tuple(float(w) for w in weights)


def luminosity_distance_mpc(z: "Column") -> "Column":
    """Luminosity distance in Mpc at redshift `z` (double; meaningful for z >= 0)."""
    from pyspark.sql import functions as F

    z = z.cast("double")
    root = F.sqrt(F.lit(1.0) + z)
    nodes, weights = _gauss_legendre()
    # the rule as an array of (node, weight) literals folded by `aggregate`: one copy of the
    # integrand in the plan instead of 24
    rule = F.array(*[F.struct(F.lit(x + 1.0).alias("x"), F.lit(2.0 * w).alias("w")) for x, w in zip(nodes, weights)])
    omega_l = 1.0 - OMEGA_M

    def integral(bound: "Column") -> "Column":
        def term(acc: "Column", node: "Column") -> "Column":
            s = bound["lower"] + bound["half"] * node["x"]
            s2 = s * s
            return acc + node["w"] / F.sqrt(F.lit(OMEGA_M) + F.lit(omega_l) * s2 * s2 * s2)

        return F.lit(HUBBLE_DISTANCE_MPC) * bound["half"] * F.aggregate(rule, F.lit(0.0), term)

    bounds = {
        "lower": F.lit(1.0) / root,
        # (1 - lower) / 2 without the cancellation of 1 - 1/sqrt(1 + z) at small z
        "half": z / (root * (F.lit(1.0) + root)) / F.lit(2.0),
    }
    return (F.lit(1.0) + z) * let(bounds, integral)


def distance_modulus(z: "Column") -> "Column":
    """5 log10(d_L / 10 pc), as Fink's `obs_to_abs_mag` computes it."""
    from pyspark.sql import functions as F

    parsecs = luminosity_distance_mpc(z) * F.lit(1e6)
    return F.lit(5.0) * F.log10(parsecs / F.lit(10.0))
