"""Parity fixtures: speech clips fitted to the window, and packages opened on the selected backend."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.decoding.language_lock import BLOCKED
from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.parity.gates import GateContext, default_tokens

CLIPS = {"long_16s_trimmed": "long_16s.wav", "short_4s_padded": "short_4s.wav"}


@pytest.fixture(scope="session", params=list(CLIPS))
def clip(request, tiny_contract):
    """(case name, audio_signal [1, window], audio_length [1]) for each committed speech clip."""
    samples = load_audio(FIXTURE_AUDIO_DIR / CLIPS[request.param], tiny_contract.model.sample_rate)
    return (request.param, *fit_window(samples, tiny_contract.window_samples))


@pytest.fixture(scope="session")
def open_package(backend, tiny_packages, tiny_contract, open_or_skip):
    """Open a tiny package by component name on the selected backend (cached per session)."""
    opened = {}

    def open_(name: str):
        if name not in opened:
            opened[name] = open_or_skip(tiny_packages / tiny_contract[name].package_name, backend)
        return opened[name]

    return open_


@pytest.fixture(scope="session")
def gate(tiny_model, tiny_contract, precision) -> GateContext:
    """The tiny model, its contract and the parametrized precision, under the tolerance table."""
    return GateContext(tiny_model, tiny_contract, precision)


@pytest.fixture(scope="session")
def non_blank_tokens(tiny_contract):
    """A fixed target sequence of non-blank tokens covering low, middle and high ids."""
    return default_tokens(tiny_contract)


@pytest.fixture(scope="session")
def fusion_scores(tiny_contract):
    """Scores like a boosting tree's and an LM's together: up to +8 on a tenth of the tokens, -3..0 elsewhere,
    large enough to relabel most tokens of a random-weight model."""
    rng = np.random.default_rng(7)
    size = tiny_contract.model.vocab_size
    scores = rng.uniform(-3, 0, size).astype(np.float32)
    scores[rng.choice(size, size // 10, replace=False)] = rng.uniform(4, 8, size // 10)
    return scores


@pytest.fixture(scope="session")
def lock_bias(tiny_contract):
    """A bias that forbids a third of the tokens (never blank) and nudges the rest by up to ±2."""
    rng = np.random.default_rng(5)
    size = tiny_contract.model.num_token_logits
    bias = rng.uniform(-2, 2, size).astype(np.float32)
    bias[rng.choice(size - 1, size // 3, replace=False)] = BLOCKED
    return bias
