"""The export under test decodes as NeMo does: greedy TDT over its packages makes NeMo transcribe()'s decisions
on each held-out file (batch of 1), on every joint path it holds. By default: the trained digits model's
foreign export, made by an independent converter (tests/foreign_exports.py)."""

from __future__ import annotations

import pytest

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.decoding.transcriber import JOINT_COMPONENT, JOINT_MODES, view_transcriber
from exporters.reference import hypothesis_decisions, nemo_transcribe
from exporters.runtime import BackendUnavailable

HELD_OUT = ("digits", "sentences")


@pytest.fixture(scope="session")
def held_out_case(judged_export, tmp_path_factory):
    """(name -> samples, name -> NeMo's hypothesis on the file) for the held-out clips that fit the window."""
    import soundfile as sf

    view = judged_export
    rate, window = view.contract.model.sample_rate, view.contract.window_samples
    folders = [view.model_source] if view.model_source in HELD_OUT else HELD_OUT  # a built-in model: its own set
    clips = {path.stem: load_audio(path, rate) for folder in folders
             for path in sorted((FIXTURE_AUDIO_DIR / folder).glob("*.wav"))}
    clips = {name: samples for name, samples in clips.items() if len(samples) <= window}
    folder = tmp_path_factory.mktemp("held-out")
    paths = []
    for name, samples in clips.items():
        sf.write(folder / f"{name}.wav", samples, rate, subtype="FLOAT")
        paths.append(str(folder / f"{name}.wav"))
    return clips, dict(zip(clips, nemo_transcribe(view.model, paths, timestamps=True, batch_size=1)))


@pytest.mark.judged_exports("foreign:digits")
@pytest.mark.parametrize("joint_mode", JOINT_MODES)
def test_packages_make_nemos_decisions(judged_export, held_out_case, backend, joint_mode):
    """Coverage: tokens, frames, durations and text equal NeMo's on every held-out file, per joint path held."""
    view = judged_export
    if JOINT_COMPONENT[joint_mode] not in view.judged:
        pytest.skip(f"{view.directory.name} holds no judged {JOINT_COMPONENT[joint_mode]} package")
    try:
        transcriber = view_transcriber(view, backend, joint_mode)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))
    clips, expected = held_out_case
    differing = [name for name, samples in clips.items()
                 if (transcript := transcriber.transcribe(samples)).decisions() != hypothesis_decisions(expected[name])
                 or transcript.text != expected[name].text]
    assert not differing, f"{len(differing)} of {len(clips)} files differ from NeMo: {differing}"
