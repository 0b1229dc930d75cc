"""Live streaming: final decisions equal NeMo's buffered streaming inference for TDT with the same chunk and
contexts (exporters.reference.nemo_streaming: NeMo's ContextSize, StreamingBatchedAudioBuffer, the model's forward
per buffer and the label-looping computer with its state carried), on the trained models' held-out clips and a
60 s joined file, every joint path, fp32; and the stream's robustness."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporters.audio import FIXTURE_AUDIO_DIR, held_out_clips, join_with_pauses, load_audio
from exporters.cli import app
from exporters.decoding.fusion import Fusion
from exporters.decoding.streaming import Stream, StreamSettings, stream_file
from exporters.decoding.transcriber import JOINT_MODES, open_transcriber
from exporters.errors import UserError
from exporters.reference import hypothesis_decisions, nemo_streaming
from exporters.runtime import BackendUnavailable
from tests.custom_vocabulary import SENTENCE_PHRASES

runner = CliRunner()
SETTINGS = {"1 s chunk": StreamSettings(chunk_seconds=1.0, left_seconds=2.0, right_seconds=0.5),
            "NeMo's defaults": StreamSettings()}
ODD_PUSHES = (1, 7, 333, 4099, 16000, 2)


def streaming_reference(model, samples: np.ndarray, settings: StreamSettings, fusion: Fusion | None = None):
    return nemo_streaming(model, samples, settings.left_seconds, settings.chunk_seconds, settings.right_seconds,
                          fusion)


def transcriber(packages, backend: str, joint_mode: str = "decode_step", fusion: Fusion | None = None):
    try:
        return open_transcriber(packages, backend, joint_mode, fusion=fusion)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))


@pytest.fixture(scope="module", params=("digits", "sentences"))
def streamed_case(request, load_subject):
    """A trained model, its held-out clips, and NeMo's streaming inference on each clip per setting."""
    subject = load_subject(request.param)
    clips, _ = held_out_clips(request.param, subject.contract.model.sample_rate)
    reference = {name: [streaming_reference(subject.model, clip, settings) for clip in clips]
                 for name, settings in SETTINGS.items()}
    return subject, clips, reference


@pytest.mark.parametrize("joint_mode", JOINT_MODES)
def test_final_decisions_equal_nemo_streaming(streamed_case, backend, joint_mode):
    """Coverage: per setting (1 s chunks with 2 s left / 0.5 s right context, and NeMo's 2 / 10 / 2 s), tokens,
    frames and durations of the final events equal NeMo's streaming inference on each held-out clip, every joint
    path; the streaming text differs from offline NeMo somewhere (it is a different reference)."""
    subject, clips, reference = streamed_case
    packages = transcriber(subject.packages("fp32"), backend, joint_mode)
    for name, settings in SETTINGS.items():
        for index, clip in enumerate(clips):
            stream, events = stream_file(packages, clip, settings, push_samples=320)
            expected = reference[name][index]
            assert stream.decisions() == hypothesis_decisions(expected), (name, index)
            assert events[-1].kind == "end" and events[-1].text == expected.text, (name, index)


def test_long_joined_file_equals_nemo_streaming(load_subject, backend):
    """Coverage: >= 60 s of held-out sentences joined with pauses, NeMo's default contexts: NeMo's decisions."""
    subject = load_subject("sentences")
    rate = subject.contract.model.sample_rate
    clips, _ = held_out_clips("sentences", rate)
    audio, _ = join_with_pauses(clips, rate, 60.0, seed=1)
    stream, _ = stream_file(transcriber(subject.packages("fp32"), backend), audio, StreamSettings(), push_samples=1600)
    expected = streaming_reference(subject.model, audio, StreamSettings())
    assert stream.decisions() == hypothesis_decisions(expected)
    assert stream.steps > 25


@pytest.fixture(scope="module")
def fused_streaming_case(load_subject, sentences_lm):
    """The sentences model, its held-out clips, a custom vocabulary (phrases and the sentences LM), and NeMo's
    streaming inference on each clip with and without it."""
    subject = load_subject("sentences")
    clips, _ = held_out_clips("sentences", subject.contract.model.sample_rate)
    fusion = Fusion(SENTENCE_PHRASES, boost_alpha=1.5, lm=sentences_lm, lm_alpha=0.5)
    settings = SETTINGS["1 s chunk"]
    plain = [streaming_reference(subject.model, clip, settings) for clip in clips]
    fused = [streaming_reference(subject.model, clip, settings, fusion) for clip in clips]
    return subject, clips, fusion, plain, fused


@pytest.mark.parametrize("joint_mode", JOINT_MODES)
def test_streaming_with_custom_vocabulary_equals_nemo_streaming(fused_streaming_case, backend, joint_mode):
    """Coverage: with phrase boosting and the LM (fusion state carried from chunk to chunk with the decoder's),
    the final decisions equal NeMo's streaming inference with the same boosting tree and LM on each held-out
    clip, every joint path; the custom vocabulary changes NeMo's streaming text on some clip."""
    subject, clips, fusion, plain, fused = fused_streaming_case
    packages = transcriber(subject.packages("fp32"), backend, joint_mode, fusion)
    assert any(a.text != b.text for a, b in zip(plain, fused)), "the custom vocabulary changed nothing"
    for index, clip in enumerate(clips):
        stream, events = stream_file(packages, clip, SETTINGS["1 s chunk"], push_samples=320)
        assert stream.decisions() == hypothesis_decisions(fused[index]), index
        assert events[-1].text == fused[index].text, index


def test_transcribe_stream_cli_with_custom_vocabulary(fused_streaming_case, sentences_lm, tmp_path):
    """Coverage: `transcribe --stream --boost-phrases --lm` ends with NeMo's fused streaming text on a clip where
    the custom vocabulary changes it."""
    subject, clips, fusion, plain, fused = fused_streaming_case
    index = next(i for i, (a, b) in enumerate(zip(plain, fused)) if a.text != b.text)
    audio = tmp_path / "clip.wav"
    import soundfile

    soundfile.write(audio, clips[index], subject.contract.model.sample_rate, subtype="FLOAT")
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("\n".join(fusion.phrases) + "\n")
    result = runner.invoke(app, ["transcribe", str(audio), "--packages", str(subject.packages("fp32")), "--backend",
                                 "mil", "--stream", "--as-fast-as-possible", "--chunk-seconds", "1",
                                 "--left-context-seconds", "2", "--right-context-seconds", "0.5",
                                 "--boost-phrases", str(phrases), "--boost-alpha", "1.5", "--lm", str(sentences_lm),
                                 "--lm-alpha", "0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["text"] == fused[index].text


@pytest.fixture(scope="module")
def sentences_stream(load_subject, backend):
    subject = load_subject("sentences")
    clip = load_audio(FIXTURE_AUDIO_DIR / "sentences" / "heldout_00002.wav", subject.contract.model.sample_rate)
    return subject, transcriber(subject.packages("fp32"), backend), clip


def pushed_in(packages, samples: np.ndarray, sizes, settings: StreamSettings) -> tuple[Stream, list]:
    stream, events, start, turn = Stream(packages, settings), [], 0, 0
    while start < len(samples):
        size = sizes[turn % len(sizes)]
        events += stream.push(samples[start:start + size])
        start, turn = start + size, turn + 1
    return stream, events + stream.end()


def test_odd_push_sizes_give_the_result_of_one_push(sentences_stream):
    """Coverage: pushes of 1, 7, 333, 4099, 16000 and 2 samples in turn give the events' texts and the decisions
    of one push of the whole clip."""
    _, packages, clip = sentences_stream
    settings = SETTINGS["1 s chunk"]
    whole, whole_events = stream_file(packages, clip, settings)
    odd, odd_events = pushed_in(packages, clip, ODD_PUSHES, settings)
    assert odd.decisions() == whole.decisions()
    assert [(e.kind, e.text) for e in odd_events] == [(e.kind, e.text) for e in whole_events]


def test_final_events_add_up_to_the_transcript(sentences_stream):
    """Coverage: final events carry only what each step made final: their texts joined are the end event's
    transcript and their words joined are its words, times included (a word once given never changes, even when a
    chunk ends inside it); partial events carry a tentative tail after the final text."""
    _, packages, clip = sentences_stream
    _, events = stream_file(packages, clip, SETTINGS["1 s chunk"], push_samples=320)
    finals = [e for e in events if e.kind == "final"]
    end = events[-1]
    assert len(finals) > 2 and sum(bool(e.text) for e in finals) > 2
    assert "".join(e.text for e in finals) == end.text
    assert [w.to_dict() for e in finals for w in e.words] == [w.to_dict() for w in end.words]
    assert any(e.kind == "partial" and e.text for e in events)
    assert all(not e.words for e in events if e.kind == "partial")


def test_terminal_view_scrolls_final_text_and_rewrites_the_tail(sentences_stream):
    """Coverage: on a terminal, final text is written once and the tentative tail rewritten after it; lines longer
    than the terminal are ended at a space, so the screen holds the whole transcript, no line wider than it."""
    import io

    from exporters.cli import TerminalLine

    _, packages, clip = sentences_stream
    _, events = stream_file(packages, clip, SETTINGS["1 s chunk"], push_samples=320)
    out = io.StringIO()
    view = TerminalLine(out, width=25)
    for event in events:
        view(event)
    screen = [line.split("\r\033[K")[-1] for line in out.getvalue().split("\n")[:-1]]
    assert len(screen) > 1 and all(len(line) <= 24 for line in screen)
    assert " ".join(screen).split() == events[-1].text.split()


@pytest.mark.parametrize("case", ["minutes of silence first", "ends mid-word"])
def test_silence_and_a_cut_word_equal_nemo_streaming(sentences_stream, case):
    """Coverage: two minutes of silence (room noise at -60 dBFS: a microphone never gives digital zeros, on which
    per-buffer normalization divides by a zero spread) before speech, and a stream that ends in the middle of a
    word: NeMo's streaming decisions on the same audio."""
    subject, packages, clip = sentences_stream
    rate = subject.contract.model.sample_rate
    silence = np.random.default_rng(3).normal(0, 1e-3, 120 * rate).astype(np.float32)
    audio = np.concatenate([silence, clip]) if case == "minutes of silence first" else clip[:int(len(clip) * 0.63)]
    settings = SETTINGS["1 s chunk"]
    stream, _ = stream_file(packages, audio, settings, push_samples=4000)
    assert stream.decisions() == hypothesis_decisions(streaming_reference(subject.model, audio, settings))


def test_a_stream_at_another_sample_rate(sentences_stream):
    """Coverage: a stream at 8 kHz after one at 16 kHz: soxr's streaming resampler feeds the packages, and the final
    decisions are NeMo's streaming on the audio it produced."""
    import soxr

    subject, packages, clip = sentences_stream
    narrow = soxr.resample(clip, 16000, 8000).astype(np.float32)
    settings = SETTINGS["1 s chunk"]
    stream_file(packages, clip, settings)
    stream = Stream(packages, settings, sample_rate=8000)
    for start in range(0, len(narrow), 555):
        stream.push(narrow[start:start + 555])
    stream.end()
    resampled = soxr.ResampleStream(8000, 16000, 1, dtype="float32")
    fed = np.concatenate([resampled.resample_chunk(narrow[start:start + 555]) for start in range(0, len(narrow), 555)]
                         + [resampled.resample_chunk(np.zeros(0, np.float32), last=True)])
    assert stream.decisions() == hypothesis_decisions(streaming_reference(subject.model, fed, settings))
    assert stream.final_text()


def test_bad_pushes(sentences_stream):
    """Coverage: NaN or infinite samples are refused in one line and the push dropped, the stream goes on and ends
    as if it never came; a push after the end is refused."""
    subject, packages, clip = sentences_stream
    settings = SETTINGS["1 s chunk"]
    stream = Stream(packages, settings)
    stream.push(clip[:8000])
    with pytest.raises(UserError, match="NaN or infinite.*the stream goes on"):
        stream.push(np.array([0.1, np.nan, np.inf], np.float32))
    stream.push(clip[8000:])
    stream.end()
    assert stream.decisions() == hypothesis_decisions(streaming_reference(subject.model, clip, settings))
    with pytest.raises(UserError, match="has ended"):
        stream.push(clip[:10])


def resident_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


# The smallest leak worth catching: an hour of 16 kHz float32 audio kept is 230 MB, its encoder frames more, its
# final tokens as objects ~5 MB. The ~20k decisions kept as arrays are ~0.3 MB; allocator noise has reached 12 MB.
HOUR_GROWTH_MB = 64
# What a stream holds between steps: the open word's tokens, and audio up to one step (12 s at NeMo's defaults).
OPEN_TOKENS = 32


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from Linux's /proc")
def test_an_hour_of_stream_keeps_resident_memory_flat(load_subject, backend):
    """Coverage: one hour of speech (60 s of joined held-out sentences, sixty times over) streamed in 0.5 s pushes
    with NeMo's default contexts: resident memory after the hour is within HOUR_GROWTH_MB of what it was after the
    first five minutes, what the stream holds between steps stays bounded (the open word's tokens, at most a step
    of audio), the stream still decodes (every minute adds final words), and the final events' words add up to the
    hour's transcript."""
    subject = load_subject("sentences")
    rate = subject.contract.model.sample_rate
    clips, _ = held_out_clips("sentences", rate)
    minute, _ = join_with_pauses(clips, rate, 60.0, seed=1)
    stream = Stream(transcriber(subject.packages("fp32"), backend), StreamSettings())
    words_per_minute, warm = [], None
    for index in range(60):
        words = 0
        for start in range(0, len(minute), rate // 2):
            words += sum(len(e.words) for e in stream.push(minute[start:start + rate // 2]) if e.kind == "final")
        words_per_minute.append(words)
        assert len(stream.timings) <= OPEN_TOKENS and len(stream.received) <= stream.step_samples()
        if index == 4:
            gc.collect()
            warm = resident_mb()
    gc.collect()
    growth = resident_mb() - warm
    print(f"resident memory growth over 55 minutes of stream: {growth:.1f} MB")
    assert growth < HOUR_GROWTH_MB
    assert min(words_per_minute[1:]) > 0.8 * words_per_minute[1]
    ending = stream.end()
    assert len(ending[-1].words) == sum(words_per_minute) + sum(len(e.words) for e in ending if e.kind == "final")


def test_stream_settings_beyond_the_window_are_refused(sentences_stream):
    _, packages, _ = sentences_stream
    with pytest.raises(UserError, match="exceeds the export's largest window"):
        Stream(packages, StreamSettings(chunk_seconds=4.0, left_seconds=10.0, right_seconds=2.0))
    with pytest.raises(UserError, match="holds no encoder frame"):
        Stream(packages, StreamSettings(chunk_seconds=0.05))


def test_transcribe_stream_cli_on_a_file_and_on_stdin(sentences_stream):
    """Coverage: `transcribe --stream FILE --as-fast-as-possible` prints JSON lines (piped) whose end event holds
    NeMo's streaming text; `--stream -` reads s16le PCM from stdin and gives NeMo's streaming text on those
    samples."""
    subject, _, clip = sentences_stream
    packages = str(subject.packages("fp32"))
    options = ["--chunk-seconds", "1", "--left-context-seconds", "2", "--right-context-seconds", "0.5"]
    audio = FIXTURE_AUDIO_DIR / "sentences" / "heldout_00002.wav"
    result = runner.invoke(app, ["transcribe", str(audio), "--packages", packages, "--backend", "mil", "--stream",
                                 "--as-fast-as-possible", *options])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["event"] for e in events} == {"final", "partial", "end"}
    settings = SETTINGS["1 s chunk"]
    assert events[-1]["text"] == streaming_reference(subject.model, clip, settings).text
    pcm = np.clip(np.round(clip * 32768), -32768, 32767).astype("<i2")
    result = runner.invoke(app, ["transcribe", "-", "--packages", packages, "--backend", "mil", "--stream", *options],
                           input=pcm.tobytes())
    assert result.exit_code == 0, result.output
    quantized = pcm.astype(np.float32) / 32768
    assert json.loads(result.stdout.splitlines()[-1])["text"] == \
        streaming_reference(subject.model, quantized, settings).text


@pytest.mark.parametrize("arguments, fragment", [
    (["a.wav", "b.wav"], "--stream takes one file"),
    (["FILE", "--sample-rate", "8000"], "--sample-rate is for raw PCM"),
    (["FILE", "--chunk-seconds", "-1"], "--chunk-seconds must be a finite number"),
    (["FILE", "--left-context-seconds", "20"], "exceeds the export's largest window"),
])
def test_bad_stream_options_are_one_line(sentences_stream, one_line_error, arguments, fragment):
    subject, _, _ = sentences_stream
    audio = str(FIXTURE_AUDIO_DIR / "sentences" / "heldout_00002.wav")
    arguments = [audio if a == "FILE" else a for a in arguments]
    result = runner.invoke(app, ["transcribe", *arguments, "--packages", str(subject.packages("fp32")), "--backend",
                                 "mil", "--stream", "--as-fast-as-possible"])
    one_line_error(result, fragment)
