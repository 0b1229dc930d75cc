"""numpy's BLAS stays on one thread while the executor runs (the heavy kernels use torch's threads)."""

from __future__ import annotations

import functools

from threadpoolctl import ThreadpoolController, threadpool_limits

from exporters.example_inputs import example_inputs
from exporters.runtime.mil import KERNELS, MilExecutor


def numpy_blas_threads() -> list[int]:
    return [info["num_threads"] for info in ThreadpoolController().info()
            if info["user_api"] == "blas" and "numpy" in info["filepath"]]


def test_numpy_blas_is_single_threaded_only_inside_predict(load_subject, monkeypatch):
    """Coverage: while the tiny decoder package runs, numpy's BLAS (what its lstm kernel multiplies with) has
    one thread, so its idle workers cannot spin beside torch's; afterwards the caller's setting (two threads
    here, whatever the environment asked for) is back."""
    seen = []
    lstm = KERNELS["lstm"]

    @functools.wraps(lstm)
    def recording_lstm(**inputs):
        seen.append(numpy_blas_threads())
        return lstm(**inputs)

    monkeypatch.setitem(KERNELS, "lstm", recording_lstm)
    tiny = load_subject("tiny")
    executor = MilExecutor(tiny.packages("fp32") / tiny.contract["decoder"].package_name)
    with threadpool_limits(limits=2, user_api="blas"):
        before = numpy_blas_threads()
        assert before and all(threads == 2 for threads in before), before
        executor.predict(example_inputs(tiny.contract["decoder"], seed=3))
        assert seen and all(threads == [1] * len(before) for threads in seen)
        assert numpy_blas_threads() == before
