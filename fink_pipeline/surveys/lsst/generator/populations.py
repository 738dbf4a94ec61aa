"""Astrophysical populations of the static alerts: the class of each alert's object, its age,
colours and light curve, and the redshift of extragalactic transients.

Classes (`CLASSES`): variable stars, flaring M dwarfs, AGN, supernova-like transients in a host
galaxy, hostless transients and bogus detections (subtraction artefacts). A pool object keeps its
class night after night (hashed from its pool key); new objects draw theirs. Stars crowd towards
the Galactic plane; M-dwarf flares are blue, so most new ones are found in u and g.

Light curves are in the alert's own units: a history point of band b at time t has the
difference flux `psfFlux * ratio_b * L(t) / L(now)` (supernovae: a rise-and-decline
`(1 - exp(-p/tau_rise)) exp(-p/tau_fall)`, p days since explosion), or a mean level plus a sine
(stars and AGN: the current detection is drawn from the same light curve plus noise, so that it
is as often above as below the mean of the earlier detections), so the current detection is a
point of the object's light curve and every band follows the class colours. A transient's redshift follows from its peak brightness
and a peak absolute magnitude (flat LambdaCDM, H0 70, Om0 0.3, as Fink's estimate).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

STAR, MDWARF, AGN, SN, HOSTLESS, BOGUS = range(6)
CLASSES = ("star", "mdwarf", "agn", "sn", "hostless", "bogus")
#: Class shares of known (pool) and new objects; stars weigh (1 + 3 exp(-|b| / 12 deg)) more
#: towards the Galactic plane. M dwarfs flare mostly in u and g: they are a share of the alerts
#: by band (`MDWARF_SHARE`), for pool objects through the M-dwarf slots of each field's pool.
KNOWN_WEIGHTS = np.array([0.30, 0.0, 0.17, 0.24, 0.01, 0.25])
NEW_WEIGHTS = np.array([0.10, 0.0, 0.03, 0.33, 0.03, 0.50])
MDWARF_SHARE = np.array([0.10, 0.10, 0.01, 0.005, 0.005, 0.005])  # u g r i z y
MDWARF_SLOTS = 100  # of POOL_PER_FIELD
#: Colours (mag relative to r, bands u g r i z y) of the variable part (difference flux) ...
DIFF_COLOUR = np.array([
    [1.2, 0.4, 0.0, -0.1, -0.2, -0.25],  # star (pulsation amplitude, bluer than the star)
    [-0.6, -0.3, 0.0, 0.3, 0.5, 0.6],  # M-dwarf flare (~9,000 K)
    [-0.4, -0.2, 0.0, 0.1, 0.2, 0.3],  # AGN
    [0.5, 0.1, 0.0, 0.1, 0.2, 0.3],  # supernova
    [0.2, 0.0, 0.0, 0.1, 0.2, 0.3],  # hostless transient
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # bogus
])
#: ... and of the template (the star, the host galaxy): M dwarfs have r-i 1.1, i-z 0.5, the
#: quiescent colours Fink's mdwarf_flare filter asks for (r-i > 0.53, i-z > 0.3).
TEMPLATE_COLOUR = np.array([
    [1.9, 0.55, 0.0, -0.2, -0.3, -0.35],
    [4.2, 1.5, 0.0, -1.1, -1.6, -1.8],
    [0.8, 0.4, 0.0, -0.3, -0.5, -0.6],
    [1.8, 0.7, 0.0, -0.4, -0.6, -0.7],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
])
#: Peak absolute magnitude of the transients: N(mean, sigma) clipped to [-21.5, -15.5].
PEAK_ABS_MAG = {SN: (-18.7, 0.9), HOSTLESS: (-19.6, 1.0)}
C_KM_S = 299_792.458


def galactic_latitude(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Galactic latitude (degrees) of ICRS positions (degrees)."""
    ra_ngp, dec_ngp = np.radians(192.85948), np.radians(27.12825)
    d = np.radians(dec)
    sin_b = np.sin(d) * np.sin(dec_ngp) + np.cos(d) * np.cos(dec_ngp) * np.cos(np.radians(ra) - ra_ngp)
    return np.degrees(np.arcsin(np.clip(sin_b, -1, 1)))


def object_classes(u: np.ndarray, is_new: np.ndarray, mdwarf: np.ndarray, gal_b: np.ndarray) -> np.ndarray:
    """Class of each object from uniforms `u` (hashed for pool objects, drawn for new ones); the
    `mdwarf` objects are M dwarfs."""
    w = np.where(is_new[:, None], NEW_WEIGHTS, KNOWN_WEIGHTS)
    w[:, STAR] *= 1 + 3 * np.exp(-np.abs(gal_b) / 12.0)
    cum = np.cumsum(w, axis=1)
    return np.where(mdwarf, MDWARF, (u[:, None] * cum[:, -1:] >= cum[:, :-1]).sum(axis=1))


def transient_curve(p: np.ndarray, tau_rise: np.ndarray, tau_fall: np.ndarray) -> np.ndarray:
    """Relative flux of a transient `p` days after explosion (0 before)."""
    p = np.maximum(p, 0.0)
    return (1 - np.exp(-p / tau_rise)) * np.exp(-p / tau_fall)


def peak_phase(tau_rise: np.ndarray, tau_fall: np.ndarray) -> np.ndarray:
    """Days from explosion to the maximum of `transient_curve`."""
    return tau_rise * np.log1p(tau_fall / tau_rise)


@lru_cache(maxsize=1)
def _distance_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, luminosity distance in Mpc, distance modulus) on a grid, flat LambdaCDM."""
    z = np.linspace(0.0, 3.0, 3001)
    inv_e = 1 / np.sqrt(0.3 * (1 + z) ** 3 + 0.7)
    comoving = np.concatenate([[0.0], np.cumsum((inv_e[1:] + inv_e[:-1]) / 2 * np.diff(z))]) * C_KM_S / 70.0
    dl = (1 + z) * comoving
    with np.errstate(divide="ignore"):
        mu = 5 * np.log10(dl * 1e5)  # 5 log10(d_L / 10 pc)
    return z[1:], dl[1:], mu[1:]


def redshift_of_modulus(mu: np.ndarray) -> np.ndarray:
    """Redshift at distance modulus `mu` (clipped to 0.001 .. 3)."""
    z, _, table = _distance_table()
    return np.interp(mu, table, z)


def luminosity_distance_mpc(z: np.ndarray) -> np.ndarray:
    """Luminosity distance (Mpc) at redshift `z`."""
    grid, dl, _ = _distance_table()
    return np.interp(z, grid, dl)


def history_flux(rng: np.random.Generator, alerts, phot, owner: np.ndarray, band: np.ndarray,
                 t: np.ndarray) -> np.ndarray:  # fmt: skip
    """Model difference flux (nJy, before noise) of earlier points of the alerts' objects: point k
    belongs to alert `owner[k]`, in `band[k]` at time `t[k]` (see the module docstring)."""
    c, psf, t_now = alerts.cls[owner], phot.psf_flux[owner], alerts.mjd[owner]
    ratio = 10 ** (-0.4 * (DIFF_COLOUR[c, band] - DIFF_COLOUR[c, alerts.band[owner]]))
    periodic = phot.level[owner] + phot.amplitude[owner] * np.sin(2 * np.pi / phot.period[owner] * t + phot.phi[owner])
    tau_rise, tau_fall, phase = phot.tau_rise[owner], phot.tau_fall[owner], phot.phase[owner]
    transient = psf * transient_curve(phase - (t_now - t), tau_rise, tau_fall) / np.maximum(
        transient_curve(phase, tau_rise, tau_fall), 1e-9)  # fmt: skip
    flare = np.abs(psf) * rng.lognormal(-0.3, 0.8, len(t)) * (rng.random(len(t)) < 0.05)  # rare flares
    artefact = np.abs(psf) * rng.lognormal(0.0, 0.5, len(t)) * np.where(rng.random(len(t)) < 0.85, 1.0, -1.0)
    model = np.select([(c == SN) | (c == HOSTLESS), c == MDWARF, c == BOGUS], [transient, flare, artefact], periodic)
    return ratio * model


def template_in_band(alerts, phot, owner: np.ndarray, band: np.ndarray) -> np.ndarray:
    """True template flux (nJy) of the alerts' objects in other bands (class template colours)."""
    c = alerts.cls[owner]
    return phot.template_flux[owner] * 10 ** (-0.4 * (TEMPLATE_COLOUR[c, band] - TEMPLATE_COLOUR[c, alerts.band[owner]]))
