"""Custom vocabulary: NeMo's phrase boosting tree and n-gram LM fusion, advanced on the host and decided on the
host over the joint package or by the decision packages fed the summed scores, against NeMo transcribe() with the same boosting tree and LM (greedy_batch, label looping) on the trained
models' held-out clips. Phrases and the LM are chosen so that they change NeMo's output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from exporters.audio import (FIXTURE_AUDIO_DIR, held_out_clips as held_out_set, held_out_entries, join_with_pauses,
                             load_audio)
from exporters.cli import app
from exporters.decoding.fusion import Fusion, fused_decision, load_lm
from exporters.decoding.token_lm import token_arpa
from exporters.decoding.transcriber import JOINT_MODES, open_transcriber, view_transcriber
from exporters.export_view import open_export
from exporters.errors import UserError
from exporters.reference import hypothesis_decisions, nemo_fusion, nemo_token_bias, nemo_transcriber
from exporters.runtime import BackendUnavailable

runner = CliRunner()

from tests.custom_vocabulary import DIGIT_PHRASES, SENTENCE_PHRASES


def held_out_clips(model_name: str, rate: int) -> dict[str, np.ndarray]:
    return {path.stem: load_audio(path, rate) for path in sorted((FIXTURE_AUDIO_DIR / model_name).glob("*.wav"))}


def fused_transcriber(packages, backend: str, fusion: Fusion, joint_mode: str = "joint"):
    try:
        return open_transcriber(packages, backend, joint_mode, fusion=fusion)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))


def fusions(model_name: str, lm_path) -> dict[str, Fusion]:
    if model_name == "digits":
        return {"boost": Fusion(DIGIT_PHRASES, boost_alpha=2.0)}
    return {"boost": Fusion(SENTENCE_PHRASES, boost_alpha=2.0), "lm": Fusion(lm=lm_path, lm_alpha=1.0),
            "boost+lm": Fusion(SENTENCE_PHRASES, boost_alpha=1.5, lm=lm_path, lm_alpha=0.5)}


@pytest.fixture(scope="module", params=("digits", "sentences"))
def fused_case(request, load_subject, case_for, sentences_lm):
    """A trained model, its held-out clips, NeMo transcribe() on each without fusion and with each fusion."""
    subject = load_subject(request.param)
    clips = held_out_clips(request.param, subject.contract.model.sample_rate)
    plain = case_for(subject, clips)
    fused = {}
    for name, fusion in fusions(request.param, sentences_lm).items():
        with nemo_fusion(subject.model, fusion):
            fused[name] = (fusion, case_for(subject, clips))
    return subject, clips, plain, fused


@pytest.mark.parametrize("joint_mode", JOINT_MODES)
def test_fused_decisions_and_word_times_equal_nemo(fused_case, backend, joint_mode):
    """Coverage: with phrase boosting, the LM, or both, tokens, frames, durations and word times over the fp32
    packages equal NeMo transcribe() with the same settings on each held-out clip, on every joint path; on the
    sentences model each fusion changes NeMo's text on some clip, and the packages follow it there."""
    subject, clips, plain, fused = fused_case
    for name, (fusion, nemo) in fused.items():
        transcriber = fused_transcriber(subject.packages("fp32"), backend, fusion, joint_mode)
        changed = [clip for clip in clips if nemo.on_file[clip].text != plain.on_file[clip].text]
        for clip, samples in clips.items():
            transcript = transcriber.transcribe(samples)
            expected = nemo.on_file[clip]
            assert transcript.decisions() == hypothesis_decisions(expected), (name, clip)
            assert transcript.text == expected.text, (name, clip)
            np.testing.assert_allclose([(w.start, w.end) for w in transcript.words],
                                       [(w["start"], w["end"]) for w in expected.timestamp["word"]], atol=1e-9)
        if subject.source == "sentences":
            assert changed, f"{name} changed none of NeMo's texts: the test would prove nothing"


# fp16 packages against NeMo fp32 with the same fusion: at most this many files differ and the WER is at most this
# much above NeMo's (the test prints the figures; all files agreed when the bounds were set).
FP16_FILES_DIFFERING = 1
FP16_WER_POINTS_OVER_NEMO = 0.01


def test_fp16_fused_decisions_against_nemo_fp32(fused_case, backend, capsys):
    """Coverage: the fp16 packages (decode_step path) with each fusion, reported against NeMo fp32 with the same
    fusion: files with NeMo's decisions and WER against the truth; bounded by the constants above."""
    from exporters.wer import word_error_rate

    subject, clips, _, fused = fused_case
    truths = {path.stem: text for path, text in held_out_entries(subject.source)}
    for name, (fusion, nemo) in fused.items():
        transcriber = fused_transcriber(subject.packages("fp16"), backend, fusion, "decode_step")
        ours = {clip: transcriber.transcribe(samples) for clip, samples in clips.items()}
        differing = [clip for clip in clips if ours[clip].decisions() != hypothesis_decisions(nemo.on_file[clip])]
        wer = word_error_rate([truths[c] for c in clips], [ours[c].text for c in clips])
        nemo_wer = word_error_rate([truths[c] for c in clips], [nemo.on_file[c].text for c in clips])
        with capsys.disabled():
            print(f"\n{subject.source} fp16 {name}: NeMo fp32's decisions on {len(clips) - len(differing)}/{len(clips)} "
                  f"files; WER {wer:.1%} (NeMo fp32 {nemo_wer:.1%})")
        assert len(differing) <= FP16_FILES_DIFFERING, (name, differing)
        assert wer <= nemo_wer + FP16_WER_POINTS_OVER_NEMO, name


def test_fusion_with_a_language_lock_equals_nemo_with_both(fused_case, case_for, backend):
    """Coverage: the language lock's bias (competing with blank) and boosting together, as NeMo with the same bias
    on its joint and the same boosting tree, on the host's path and the one-call decode step."""
    subject, clips, plain, fused = fused_case
    fusion, _ = fused["boost"]
    emitted = sorted({int(t) for h in plain.on_file.values() for t in h.y_sequence})
    bias = np.zeros(subject.contract.model.num_token_logits, np.float32)
    bias[emitted[::4]] = -1.0e4
    with nemo_token_bias(subject.model, bias), nemo_fusion(subject.model, fusion):
        both = case_for(subject, clips)
    for joint_mode in ("joint", "decode_step"):
        transcriber = fused_transcriber(subject.packages("fp32"), backend, fusion, joint_mode)
        transcriber.token_bias = bias
        for clip, samples in clips.items():
            assert transcriber.transcribe(samples).decisions() == hypothesis_decisions(both.on_file[clip]), clip
    assert [h.text for h in both.on_file.values()] != [h.text for h in fused["boost"][1].on_file.values()]


@pytest.fixture(scope="module")
def long_fused_case(load_subject, case_for, sentences_lm):
    """>= 60 s of held-out sentences joined with pauses, and NeMo transcribe() on the whole file with boosting and
    the LM."""
    subject = load_subject("sentences")
    rate = subject.contract.model.sample_rate
    clips, _ = held_out_set("sentences", rate)
    audio, _ = join_with_pauses(clips, rate, 60.0, seed=0)
    fusion = fusions("sentences", sentences_lm)["boost+lm"]
    with nemo_fusion(subject.model, fusion):
        nemo = case_for(subject, {"long": audio})
    return subject, audio, fusion, nemo.on_file["long"]


def test_long_audio_in_a_window_holding_it_equals_nemo_on_the_whole_file(long_fused_case, backend):
    """Coverage: a >= 60 s file in the 65 s window of a 15 + 65 s export (decode-step path) with boosting and the LM:
    NeMo transcribe()'s decisions and text on the whole file with the same fusion."""
    subject, audio, fusion, expected = long_fused_case
    packages = subject.windowed("fp32", (15.0, 65.0), ("preprocessor", "encoder", "decoder", "decode_step"))
    transcript = fused_transcriber(packages, backend, fusion, "decode_step").transcribe(audio)
    assert transcript.window_seconds == [65.0]
    assert transcript.decisions() == hypothesis_decisions(expected)
    assert transcript.text == expected.text


def test_chunked_long_audio_carries_the_fusion_state_as_nemos_modules_do(long_fused_case, backend):
    """Coverage: the same file chunked in the 15 s window: the packages (joint_decision path) with boosting and the
    LM make the decisions of NeMo's modules through the same chunks with the same fusion models, whose states
    carry across chunks."""
    subject, audio, fusion, _ = long_fused_case
    ours = fused_transcriber(subject.packages("fp32"), backend, fusion, "joint_decision").transcribe(audio)
    reference = nemo_transcriber(subject.model, subject.contract, "joint", fusion=fusion).transcribe(audio)
    assert len(ours.window_seconds) > 4
    assert ours.decisions() == reference.decisions()


def test_fused_decision_keeps_blank_and_duration():
    """NeMo's semantics, worked by hand on one row (V = 3 tokens + blank, 2 durations): fusion scores pick among
    tokens only when the unbiased choice is a token; blank stays blank whatever they are; the duration is the
    unbiased one."""
    class Context:
        def __init__(self, *scores):
            self.scores = [torch.tensor([values], dtype=torch.float32) for values in scores]

    row = np.array([1.0, 3.0, 0.0, 2.0, 0.5, 0.2], np.float32)  # token 1 best, blank second, duration 0
    assert fused_decision(row, 4, Context([0.0, 0.0, 0.0])) == (1, 0)
    assert fused_decision(row, 4, Context([2.5, 0.0, 0.0])) == (0, 0)      # 1 + 2.5 > 3
    assert fused_decision(row, 4, Context([1.0, 0.0, 0.0], [1.5, 0.0, 0.0])) == (0, 0)  # models add up
    assert fused_decision(row, 4, Context([0.0, -5.0, 0.0])) == (0, 0)    # a token still, never blank
    blank_row = np.array([1.0, 2.0, 0.0, 3.0, 0.1, 0.9], np.float32)        # blank best, duration 1
    assert fused_decision(blank_row, 4, Context([0.0, 9.0, 0.0])) == (3, 1)


def test_token_arpa_probabilities_as_nemo_reads_them(tmp_path):
    """A two-sentence corpus worked by hand: add-one unigrams over 4 tokens and </s> (counts 1:2, 2:1, 3:1, </s>:2
    of 6), and p(2 | 1) = (1 - 0.5) / 2 + (0.5 * 2 / 2) * p(2); NeMo's NGramGPULanguageModel reads the file."""
    path = tmp_path / "lm.arpa"
    path.write_text(token_arpa([[1, 2], [1, 3]], vocab_size=4, order=2))
    lm = load_lm(path, 4)
    with torch.no_grad():
        scores, next_states = lm.advance(lm.get_init_states(1, bos=False))
        after_one, _ = lm.advance(next_states[:, 1])
    np.testing.assert_allclose(scores.exp().numpy()[0], [1 / 11, 3 / 11, 2 / 11, 2 / 11], rtol=1e-5)
    assert math.isclose(float(after_one.exp()[0, 2]), 0.25 + 0.5 * 2 / 11, rel_tol=1e-5)


@pytest.fixture(scope="module")
def sentences_fp32(load_subject):
    return load_subject("sentences").packages("fp32")


def test_transcribe_cli_boost_phrases_prints_nemos_boosted_text(load_subject, tmp_path):
    """Coverage: `transcribe --boost-phrases FILE --boost-alpha` prints NeMo's boosted text on a clip boosting
    changes."""
    from exporters.reference import nemo_transcribe

    subject = load_subject("sentences")
    fusion = Fusion(SENTENCE_PHRASES, boost_alpha=2.0)
    audio = FIXTURE_AUDIO_DIR / "sentences" / "heldout_00005.wav"
    (plain,) = nemo_transcribe(subject.model, [str(audio)], batch_size=1)
    with nemo_fusion(subject.model, fusion):
        (boosted,) = nemo_transcribe(subject.model, [str(audio)], batch_size=1)
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("\n".join(fusion.phrases) + "\n")
    result = runner.invoke(app, ["transcribe", str(audio), "--packages", str(subject.packages("fp32")), "--backend",
                                 "mil", "--boost-phrases", str(phrases), "--boost-alpha", str(fusion.boost_alpha)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == boosted.text != plain.text


def test_evaluate_cli_with_an_lm_agrees_with_nemo_with_the_lm(sentences_fp32, sentences_lm, tmp_path):
    """Coverage: `evaluate --lm` decodes the held-out set with the LM, NeMo too: every file NeMo's decisions."""
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", "--packages", str(sentences_fp32), "--backend", "mil", "--lm",
                                 str(sentences_lm), "--lm-alpha", "1.0", "--report", str(report)])
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())["summary"]
    assert summary["files"] == 16 and summary["decisions_identical"] == 1.0


def malformed_arpa(tmp_path):
    path = tmp_path / "bad.arpa"
    path.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\td\textra\tfields\n")
    return path


def binary_lm(tmp_path):
    path = tmp_path / "binary.arpa"
    path.write_bytes(b"\\data\\\n\xff\xfe\x00\x01" * 8)
    return path


def foreign_vocabulary_arpa(tmp_path):
    path = tmp_path / "big.arpa"
    path.write_text(token_arpa([[300, 301]], vocab_size=1024, order=2))
    return path


@pytest.mark.parametrize("case, fragment", [
    ("empty phrases", "holds no phrase"),
    ("unencodable phrase", "cannot encode"),
    ("malformed ARPA", "not an ARPA unigram line"),
    ("binary LM", "not UTF-8"),
    ("LM folder", "is no file"),
    ("missing LM", "does not exist"),
    ("truncated ARPA", "no \\end\\"),
    ("foreign LM", "does not match the model's tokenizer"),
    ("negative alpha", "--boost-alpha must be a finite number >= 0"),
    ("infinite alpha", "--lm-alpha must be a finite number >= 0"),
])
def test_bad_custom_vocabulary_is_one_line(sentences_fp32, sentences_lm, tmp_path, one_line_error, case, fragment):
    """Each is refused in one line, exit 2, before any audio is decoded (nothing printed on stdout)."""
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("happy boat\n")
    truncated = tmp_path / "truncated.arpa"
    lines = sentences_lm.read_text().splitlines(keepends=True)
    truncated.write_text("".join(lines[:lines.index("\\2-grams:\n") + 10]))  # whole lines, no \end\
    options = {
        "empty phrases": ["--boost-phrases", str(tmp_path / "empty.txt")],
        "unencodable phrase": ["--boost-phrases", str(tmp_path / "cyrillic.txt")],
        "malformed ARPA": ["--lm", str(malformed_arpa(tmp_path))],
        "binary LM": ["--lm", str(binary_lm(tmp_path))],
        "LM folder": ["--lm", str(tmp_path)],
        "missing LM": ["--lm", str(tmp_path / "missing.arpa")],
        "truncated ARPA": ["--lm", str(truncated)],
        "foreign LM": ["--lm", str(foreign_vocabulary_arpa(tmp_path))],
        "negative alpha": ["--boost-phrases", str(phrases), "--boost-alpha", "-1"],
        "infinite alpha": ["--lm", str(sentences_lm), "--lm-alpha", "inf"],
    }[case]
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "cyrillic.txt").write_text("привет мир\n")
    result = runner.invoke(app, ["transcribe", str(FIXTURE_AUDIO_DIR / "sentences" / "heldout_00000.wav"),
                                 "--packages", str(sentences_fp32), "--backend", "mil", *options])
    one_line_error(result, fragment)


def test_foreign_decision_package_without_fusion_input_is_refused(load_subject, foreign_export_of):
    """Coverage: another converter's joint_decision takes no fusion_scores: asking it to decide with custom
    vocabulary is refused in one line naming the package, and the joint path is offered."""
    digits = load_subject("digits")
    view = open_export(foreign_export_of(digits), model=digits.intact_model())
    with pytest.raises(UserError, match="needs --joint-mode joint with this export: its JointDecision"):
        view_transcriber(view, "mil", "joint_decision", fusion=Fusion(DIGIT_PHRASES))


def test_fusion_needs_something_to_fuse():
    with pytest.raises(UserError, match="key phrases or an LM"):
        Fusion()
