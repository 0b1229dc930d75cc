"""End to end: greedy TDT over the exported packages makes the decisions of NeMo transcribe() on the file."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.decoding.divergence import first_divergence, recording
from exporters.decoding.transcriber import JOINT_MODES
from exporters.parity.diff import tolerance
from exporters.reference import hypothesis_decisions, nemo_transcriber

PATHS = [(mode, fused) for mode in JOINT_MODES for fused in (False, True)]


# Random weights give near-tied logits; a decision may flip there only (the bar).
NEAR_TIE = 1e-5


def check_against_nemo_on_file(case, transcriber, name: str, samples) -> str | None:
    """None if the packages make NeMo's decisions on the file; else, on a random-weight model, a report of
    the first differing decision, which must sit at a NeMo near-tie (top-2 margin < NEAR_TIE)."""
    transcript = transcriber.transcribe(samples)
    expected = case.on_file[name]
    if transcript.decisions() == hypothesis_decisions(expected) and transcript.text == expected.text:
        return None
    assert not case.subject.trained, \
        f"{case.subject.source} {name}: {transcript.decisions()} != NeMo's {hypothesis_decisions(expected)}"
    reference = recording(nemo_transcriber(case.subject.model, case.subject.contract))
    package = recording(transcriber, joint=reference.runtimes["joint"])
    reference.transcribe(samples)
    package.transcribe(samples)
    divergence = first_divergence(package, reference)
    assert divergence is not None, f"{name}: decisions differ from transcribe() but not from NeMo's modules"
    assert divergence.margin < NEAR_TIE, f"{name}: {divergence}"
    return (f"{name}: decision {divergence.index} (frame {divergence.frame}, {divergence.flipped}) "
            f"margin {divergence.margin:.2e}")


@pytest.mark.parametrize("joint_mode, fused", PATHS)
def test_fp32_packages_make_nemo_decisions_on_the_file(decoding_case, transcriber_for, joint_mode, fused):
    """Coverage: tokens, frames, durations and text equal NeMo transcribe() on each clip as its own file
    (batch of 1), per decoding path; trained models exactly, random weights except at NeMo near-ties."""
    transcriber = transcriber_for(decoding_case.subject.packages("fp32"), joint_mode, fused)
    flips = [report for name, samples in decoding_case.clips.items()
             if (report := check_against_nemo_on_file(decoding_case, transcriber, name, samples))]
    print(f"{decoding_case.subject.source} {joint_mode} fused={fused}: {len(flips)} of {len(decoding_case.clips)} "
          f"clips differ from NeMo on the file, each at a near-tie: {flips}")


def test_fp32_word_timestamps_equal_nemo_on_the_file(decoding_case, transcriber_for):
    """Coverage: words and their start/end seconds equal NeMo transcribe()'s word timestamps on each file
    (a random-weight clip whose decisions flipped at a near-tie is reported by the test above instead)."""
    transcriber = transcriber_for(decoding_case.subject.packages("fp32"))
    for name, samples in decoding_case.clips.items():
        transcript = transcriber.transcribe(samples)
        expected = decoding_case.on_file[name]
        if transcript.decisions() != hypothesis_decisions(expected):
            assert not decoding_case.subject.trained, name
            continue
        assert [w.word for w in transcript.words] == [w["word"] for w in expected.timestamp["word"]], name
        np.testing.assert_allclose([(w.start, w.end) for w in transcript.words],
                                   [(w["start"], w["end"]) for w in expected.timestamp["word"]], rtol=0, atol=1e-9,
                                   err_msg=name)


def test_trained_models_also_agree_with_nemo_on_a_padded_window(decoding_case, transcriber_for):
    """Coverage (second check): on trained models, the text equals NeMo's on the clip zero-padded to the
    window with its true length (what NeMo computes when it batches the clip with a 15 s file)."""
    transcriber = transcriber_for(decoding_case.subject.packages("fp32"))
    same = {name: transcriber.transcribe(samples).text == decoding_case.on_window[name].text
            for name, samples in decoding_case.clips.items()}
    print(f"{decoding_case.subject.source}: text equals NeMo on the padded window for {sum(same.values())} "
          f"of {len(same)} clips")
    if decoding_case.subject.trained:
        assert all(same.values()), [name for name, ok in same.items() if not ok]


def test_fp16_agreement_and_every_difference_margin(decoding_case, transcriber_for):
    """Coverage: per clip (speech, and every committed held-out clip of the trained models), fp16 packages
    make NeMo fp32's decisions on the file, or first differ where NeMo's own margin is below fp16 noise;
    reports decisions agreed and each difference's margin."""
    subject = decoding_case.subject
    agreed, total, differences = 0, 0, []
    for name, samples in decoding_case.clips.items():
        reference = recording(nemo_transcriber(subject.model, subject.contract))
        package = recording(transcriber_for(subject.packages("fp16")))
        reference.transcribe(samples)
        package.transcribe(samples)
        divergence = first_divergence(package, reference)
        total += len(reference.log)
        agreed += len(reference.log) if divergence is None else divergence.index
        if divergence is None:
            continue
        differences.append(f"{name}: decision {divergence.index} ({divergence.flipped}) margin {divergence.margin:.2e}")
        # Two logits within the fp16 joint tolerance of NeMo's can swap only if NeMo's gap is under twice it.
        tol = tolerance("joint", "fp16", f"{divergence.flipped}_logits")
        assert divergence.margin < 2 * (tol.atol + tol.rtol * divergence.top_logit), \
            f"{name}: decision {divergence.index} at frame {divergence.frame} flipped although NeMo's margin " \
            f"was {divergence.margin}"
    print(f"{subject.source}: fp16 agrees with NeMo fp32 on {agreed} of {total} decisions over "
          f"{len(decoding_case.clips)} clips; {len(differences)} clips differ: {differences}")


@given(data=st.data())
def test_any_crop_of_speech_decodes_like_nemo_on_the_file(decoding_subject, transcriber_for, case_for, data):
    """Coverage: a random crop (257 samples to 15 s) of speech, written as a file: fp32 packages make NeMo
    transcribe()'s decisions on it (trained exactly; random weights except at NeMo near-ties)."""
    contract = decoding_subject.contract
    speech = load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", contract.model.sample_rate)
    length = data.draw(st.integers(257, contract.window_samples), label="length")
    start = data.draw(st.integers(0, len(speech) - length), label="start")
    case = case_for(decoding_subject, {"crop": speech[start:start + length]})
    check_against_nemo_on_file(case, transcriber_for(decoding_subject.packages("fp32")), "crop", case.clips["crop"])


def test_fluidaudio_layout_makes_nemo_decisions_on_the_file(load_subject, case_for, transcriber_for):
    """Coverage: the `convert --layout fluidaudio` export of the trained digits model, decoded step by step with
    its JointDecisionv3 (the only joint it has), makes NeMo transcribe()'s decisions on every digits clip."""
    digits = load_subject("digits")
    clips = {path.stem: load_audio(path, digits.contract.model.sample_rate)
             for path in sorted((FIXTURE_AUDIO_DIR / "digits").glob("*.wav"))}
    case = case_for(digits, clips)
    transcriber = transcriber_for(digits.packages("fp32", "fluidaudio"), "single_step")
    for name, samples in clips.items():
        transcript = transcriber.transcribe(samples)
        assert transcript.decisions() == hypothesis_decisions(case.on_file[name]), name
        assert transcript.text == case.on_file[name].text, name
