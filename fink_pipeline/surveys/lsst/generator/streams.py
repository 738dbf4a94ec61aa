"""Deterministic randomness: one random stream per (seed, night, block, section) and hashed
uniforms that give an object the same values in every block and night.
"""

from __future__ import annotations

import datetime as dt

import numpy as np


def block_rng(seed: int, night: dt.date, block: int, tag: int) -> np.random.Generator:
    """Random stream of one block (independent of the batch size)."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, night.toordinal(), block, tag]))


def _hash_uniform(keys: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Deterministic uniforms in [0, 1) from integer keys (same object -> same value)."""
    x = (keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64((seed * 1_000_003 + salt) & 0xFFFFFFFF)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
