"""PNG plots of a compare run (matplotlib, Agg): where and how a package departs from NeMo."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def mel_plot(expected: np.ndarray, actual: np.ndarray, path: Path) -> Path:
    """NeMo's mel, the package's mel, and their difference, as images over (mel bin, frame)."""
    figure, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for axis, image, title in zip(axes, (expected[0], actual[0], actual[0] - expected[0]),
                                  ("NeMo mel", "package mel", "package − NeMo")):
        shown = axis.imshow(image, aspect="auto", origin="lower", cmap="magma" if axis is not axes[2] else "coolwarm")
        axis.set_title(title)
        axis.set_ylabel("mel bin")
        figure.colorbar(shown, ax=axis)
    axes[-1].set_xlabel("frame")
    return save(figure, path)


def encoder_error_plot(expected: np.ndarray, actual: np.ndarray, path: Path) -> Path:
    """L2 norm of the encoder error per frame, next to the L2 norm of NeMo's output."""
    figure, axis = plt.subplots(figsize=(10, 4))
    axis.semilogy(np.linalg.norm(actual[0] - expected[0], axis=0) + 1e-12, label="‖package − NeMo‖₂")
    axis.semilogy(np.linalg.norm(expected[0], axis=0), label="‖NeMo‖₂", alpha=0.6)
    axis.set_xlabel("encoder frame")
    axis.legend()
    axis.set_title("encoder error over time")
    return save(figure, path)


def decoder_error_plot(expected: np.ndarray, actual: np.ndarray, path: Path) -> Path:
    """Max |error| of the decoder output at each chained step."""
    figure, axis = plt.subplots(figsize=(8, 4))
    errors = np.abs(actual - expected).reshape(len(expected), -1).max(axis=1)
    axis.semilogy(np.arange(len(errors)), errors + 1e-12, marker="o")
    axis.set_xlabel("decoder step (token)")
    axis.set_ylabel("max |package − NeMo|")
    axis.set_title("decoder per-step error, h/c chained through the package")
    return save(figure, path)


def joint_agreement_plot(expected: np.ndarray, actual: np.ndarray, path: Path) -> Path:
    """Share of (frame, step) positions whose top-k token sets agree, for k = 1..5."""
    expected_rank = np.argsort(-expected, axis=-1)
    actual_rank = np.argsort(-actual, axis=-1)
    ks = np.arange(1, 6)
    agreement = [np.mean(np.all(np.sort(expected_rank[..., :k], -1) == np.sort(actual_rank[..., :k], -1), -1))
                 for k in ks]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.bar(ks, agreement)
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("k")
    axis.set_ylabel("top-k set agreement")
    axis.set_title("joint token logits: package vs NeMo")
    return save(figure, path)
