"""A failing gate names its likely cause: foreign exports (tests/foreign_exports.py), each with one seeded flaw,
fail with the right diagnosis; the faithful one passes with none."""

from __future__ import annotations

import pytest

from exporters.export_view import open_export
from exporters.parity.report import DEFAULT_CLIP, compare_view
from tests.foreign_exports import FLAWS

# flaw -> the component whose diagnosis names it
DIAGNOSED = {"unmasked_subsampling": "encoder", "end_of_audio_padding": "encoder", "swapped_state": "decoder",
             "transposed_state": "decoder", "duration_mapping": "joint_decision", "fp16_overflow": "encoder",
             "wrong_window": "joint", "compressed_weights": "encoder"}


def judged(load_subject, foreign_export_of, source: str, flaw: str):
    loaded = load_subject(source)
    view = open_export(foreign_export_of(loaded, flaw), model=loaded.intact_model())
    return view, compare_view(view, DEFAULT_CLIP, "mil", 1, 0, None, None)


@pytest.mark.parametrize("source", ("tiny", "digits"))
@pytest.mark.parametrize("flaw", list(FLAWS))
def test_seeded_flaw_fails_with_its_diagnosis(load_subject, foreign_export_of, source, flaw):
    """Coverage: each seeded converter flaw fails `compare` and is named as the likely cause, for the component
    it sits in, on the random tiny and the trained digits model."""
    view, report = judged(load_subject, foreign_export_of, source, flaw)
    assert not report.passed, f"{flaw}: every gate passed"
    causes = {(d.component, d.cause) for d in report.diagnoses}
    assert (DIAGNOSED[flaw], flaw) in causes, f"{flaw}: diagnosed {sorted(causes)}"


def test_every_flaw_has_a_diagnosed_component():
    """Coverage: the seeded flaws and the diagnoses checked for them are the same list."""
    assert set(DIAGNOSED) == set(FLAWS)


@pytest.mark.parametrize("source", ("tiny", "digits"))
def test_faithful_foreign_export_passes_with_no_diagnosis(load_subject, foreign_export_of, source):
    """Coverage: the same converter without a flaw passes every gate and `compare` names no cause."""
    view, report = judged(load_subject, foreign_export_of, source, "faithful")
    failing = [d.describe() for d in report.diffs if not d.passed]
    assert report.passed and not failing, failing
    assert not report.diagnoses
    assert set(view.judged) == {"preprocessor", "encoder", "decoder", "joint", "joint_decision"}
