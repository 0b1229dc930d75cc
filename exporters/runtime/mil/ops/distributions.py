"""Random tensors: random_uniform, random_normal, random_bernoulli (numpy's generator: a seed gives a
repeatable tensor, not Core ML's; seed -1 a fresh one each run)."""

from __future__ import annotations

import numpy as np

from .registry import kernel


def _generator(seed) -> np.random.Generator:
    return np.random.default_rng(None if int(seed) == -1 else int(seed))


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(size) for size in np.ravel(shape))


@kernel("random_uniform")
def random_uniform(shape, low=0.0, high=1.0, seed=-1):
    """Values drawn uniformly from [low, high)."""
    return (_generator(seed).uniform(low, high, _shape(shape)).astype(np.float32),)


@kernel("random_normal")
def random_normal(shape, mean=0.0, stddev=1.0, seed=-1):
    """Values drawn from the normal distribution N(mean, stddev**2)."""
    return (_generator(seed).normal(mean, stddev, _shape(shape)).astype(np.float32),)


@kernel("random_bernoulli")
def random_bernoulli(shape, prob=0.5, seed=-1):
    """1 with probability prob, else 0."""
    return ((_generator(seed).random(_shape(shape)) < prob).astype(np.float32),)
