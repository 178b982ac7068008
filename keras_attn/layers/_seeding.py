"""Seeded initializers, so model builders get reproducible weights in any creation order."""

import keras


def derive(seed, offset):
    """The seed of a layer's `offset`-th sublayer; `None` stays `None` (unseeded)."""
    return None if seed is None else seed + offset


def glorot(seed, offset):
    return keras.initializers.GlorotUniform(seed=derive(seed, offset))


def he(seed, offset):
    return keras.initializers.HeNormal(seed=derive(seed, offset))
