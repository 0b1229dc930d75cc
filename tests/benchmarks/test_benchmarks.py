"""pytest-benchmark figures: per component and end to end, per backend; export cost. No time is asserted.

Run `uv run pytest --benchmark-only` to measure; plain `pytest` runs each benchmark once, untimed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from exporters.audio import FIXTURE_AUDIO_DIR, fit_window, load_audio
from exporters.components import COMPONENTS
from exporters.compression import NONE
from exporters.contract import TOKEN_BIAS
from exporters.evaluate import held_out_manifest, package_bytes
from exporters.example_inputs import example_inputs
from exporters.memory import process_peak_rss_mb
from exporters.metadata import read_metadata
from exporters.parity.diff import assert_passed, psnr_db
from exporters.parity.gates import GateContext, encoder_gate, nemo_mel_and_encoded
from exporters.reference import nemo_runtime, nemo_transcribe
from exporters.runtime import COREML_COMPUTE_UNITS, BackendUnavailable, CountingRuntime, coreml_available, load

pytestmark = pytest.mark.benchmark
ALTERNATING_ROUNDS = 7


def window_seconds(contract) -> float:
    return contract.window_samples / contract.model.sample_rate


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_on_executor(benchmark, record_run, host, tiny_contract, tiny_packages, precision, name):
    """Coverage: one call of each tiny package through the MIL executor."""
    package = load(tiny_packages / tiny_contract[name].package_name, "mil")
    inputs = example_inputs(tiny_contract[name])
    benchmark(package.predict, inputs)
    record_run(benchmark, audio_seconds=window_seconds(tiny_contract), backend="mil", precision=precision,
               model="tiny", host=host, component=name)


@pytest.mark.parametrize("lock", ["absent", "fed"])
def test_single_step_with_and_without_lock(benchmark, record_run, host, backend, tiny_contract, tiny_packages,
                                           precision, lock, open_or_skip):
    """Coverage: one single-step joint_decision call with token_bias left out (its default) or fed (a lock)."""
    name = "joint_decision_single_step"
    package = open_or_skip(tiny_packages / tiny_contract[name].package_name, backend)
    inputs = example_inputs(tiny_contract[name])
    if lock == "absent":
        inputs.pop(TOKEN_BIAS)
    benchmark(package.predict, inputs)
    record_run(benchmark, audio_seconds=window_seconds(tiny_contract) / tiny_contract.encoder_frames, backend=backend,
               precision=precision, model="tiny", host=host, component=name, lock=lock)


FUSIONS = ("boost", "lm", "boost+lm")


def sentences_fusion(kind: str, lm_path):
    from exporters.decoding.fusion import Fusion
    from tests.custom_vocabulary import SENTENCE_PHRASES

    return Fusion(SENTENCE_PHRASES if "boost" in kind else (), lm=lm_path if "lm" in kind else None)


@pytest.mark.parametrize("kind", FUSIONS)
def test_fusion_advance_per_token(benchmark, record_run, host, load_subject, sentences_lm, kind):
    """Coverage: the host's cost per emitted token of custom vocabulary: NeMo's boosting tree and/or the sentences
    trigram moved on by one token and scored over the vocabulary (what an app does per token beside the packages'
    decode step, `test_decode_step_with_and_without_fusion_scores`)."""
    subject = load_subject("sentences")
    model = subject.model
    models = sentences_fusion(kind, sentences_lm).models(model.tokenizer, model.tokenizer.vocab_size)
    start = models.start()
    token = model.tokenizer.text_to_ids("happy")[0]
    benchmark(models.after, start, token)
    record_run(benchmark, audio_seconds=window_seconds(subject.contract) / subject.contract.encoder_frames,
               backend="host", precision="fp32", model="sentences", host=host, fusion=kind)


@pytest.mark.parametrize("fusion", ["absent", "fed"])
def test_decode_step_with_and_without_fusion_scores(benchmark, record_run, host, backend, load_subject, fusion,
                                                    open_or_skip):
    """Coverage: one decode_step call of the sentences model with fusion_scores left out (its default) or fed."""
    from exporters.contract import FUSION_SCORES

    subject = load_subject("sentences")
    name = "decode_step"
    package = open_or_skip(subject.packages("fp32") / subject.contract[name].package_name, backend)
    inputs = example_inputs(subject.contract[name])
    if fusion == "absent":
        inputs.pop(FUSION_SCORES)
    benchmark(package.predict, inputs)
    record_run(benchmark, audio_seconds=window_seconds(subject.contract) / subject.contract.encoder_frames,
               backend=backend, precision="fp32", model="sentences", host=host, component=name, fusion=fusion)


@pytest.fixture(scope="module")
def streamed_minute(load_subject):
    """>= 60 s of held-out sentences joined with pauses, its true text, and NeMo transcribe() on the whole file."""
    from exporters.audio import held_out_clips, join_with_pauses

    subject = load_subject("sentences")
    rate = subject.contract.model.sample_rate
    clips, texts = held_out_clips("sentences", rate)
    audio, order = join_with_pauses(clips, rate, 60.0, seed=1)
    (offline,) = nemo_transcribe_samples(subject.model, [audio], rate)
    return subject, audio, " ".join(texts[i] for i in order), offline.text


LONG_FORM_ON_NEMO: dict = {}  # (model, shifts) -> the shifted clips, the true text, NeMo's text of each clip


def long_form_on_nemo(subject, shifts: tuple[float, ...]):
    """A trained model's long-form clip after each shift's silence, its true text, and NeMo transcribe() on each
    shifted clip as a file."""
    from exporters.long_form import grid_shifted, long_form

    key = (subject.source, shifts)
    if key not in LONG_FORM_ON_NEMO:
        rate = subject.contract.model.sample_rate
        audio, truth = long_form(subject.source, rate)
        clips = grid_shifted(audio, rate, list(shifts))
        on_file = nemo_transcribe_samples(subject.model, list(clips.values()), rate)
        LONG_FORM_ON_NEMO[key] = clips, truth, {name: h.text for name, h in zip(clips, on_file)}
    return LONG_FORM_ON_NEMO[key]


@pytest.mark.parametrize("source", ["digits", "sentences"])
@pytest.mark.parametrize("layout", ["15 s chunks", "65 s window"])
def test_long_form_against_nemo_on_the_whole_file(benchmark, record_run, host, backend, load_subject, source, layout):
    """Coverage: the 12 grid-shifted >= 60 s long-form clips of a trained model (two in plain runs) through its fp32
    packages, chunked in 15 s windows (joint path) or whole in the 65 s window of a 15 + 65 s export (decode-step
    path): the words differing from NeMo transcribe() on each whole file, the errors of both against the true
    text, and the time per file."""
    from exporters.decoding.transcriber import open_transcriber
    from exporters.long_form import DECODE_STEP_COMPONENTS, GRID_SHIFTS, LONG_WINDOW_SECONDS, word_differences

    subject = load_subject(source)
    clips, truth, nemo_texts = long_form_on_nemo(subject, tuple(GRID_SHIFTS[:2] if benchmark.disabled else GRID_SHIFTS))
    packages, joint_mode = (subject.packages("fp32"), "joint") if layout == "15 s chunks" else \
        (subject.windowed("fp32", (15.0, LONG_WINDOW_SECONDS), DECODE_STEP_COMPONENTS), "decode_step")
    try:
        transcriber = open_transcriber(packages, backend, joint_mode)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))
    transcripts = benchmark.pedantic(lambda: [transcriber.transcribe(samples) for samples in clips.values()],
                                     rounds=1, iterations=1)
    texts = dict(zip(clips, (t.text for t in transcripts)))
    assert all(texts.values())
    record_run(benchmark, audio_seconds=sum(map(len, clips.values())) / subject.contract.model.sample_rate,
               backend=backend, precision="fp32", model=source, host=host, layout=layout, files=len(clips),
               words=len(truth.split()) * len(clips),
               differing_from_nemo=sum(word_differences(nemo_texts[name], texts[name]) for name in clips),
               errors_packages=sum(word_differences(truth, text) for text in texts.values()),
               errors_nemo=sum(word_differences(truth, text) for text in nemo_texts.values()))


def nemo_transcribe_samples(model, clips: list[np.ndarray], rate: int) -> list:
    """NeMo transcribe() on each clip as a file of its own (batch of 1); the files are removed afterwards."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        paths = [str(Path(folder) / f"{index}.wav") for index in range(len(clips))]
        for path, samples in zip(paths, clips):
            sf.write(path, samples, rate, subtype="FLOAT")
        return nemo_transcribe(model, paths, batch_size=1)


def streaming_setup(subject, backend: str, chunk_seconds: float):
    """The fp32 packages' decode-step transcriber and the streaming settings of a chunk size: 2 s right context,
    10 s left (less where the 15 s window needs it)."""
    from exporters.decoding.streaming import StreamSettings
    from exporters.decoding.transcriber import open_transcriber

    try:
        transcriber = open_transcriber(subject.packages("fp32"), backend, "decode_step")
    except BackendUnavailable as reason:
        pytest.skip(str(reason))
    return transcriber, StreamSettings(chunk_seconds=chunk_seconds, left_seconds=min(10.0, 13.0 - chunk_seconds),
                                       right_seconds=2.0)


@pytest.mark.parametrize("chunk_seconds", [0.5, 1.0, 2.0, 4.0])
def test_streaming_by_chunk(benchmark, record_run, host, backend, streamed_minute, chunk_seconds):
    """Coverage: a minute of held-out sentences streamed in 20 ms pushes through the fp32 packages (decode-step
    path), 2 s right context and 10 s left (less where the 15 s window needs it): compute time (the benchmark), and
    in extra_info the WER against the true text, word differences from NeMo transcribe() offline on the whole file,
    and emission latency (audio time from a word's end to the final event holding it, and to the first event
    showing it)."""
    import jiwer

    from exporters.decoding.streaming import emission_latency, stream_file
    from exporters.wer import normalize_text, word_error_rate

    subject, audio, truth, offline = streamed_minute
    transcriber, settings = streaming_setup(subject, backend, chunk_seconds)
    stream, events = benchmark.pedantic(stream_file, args=(transcriber, audio, settings, 320), rounds=1,
                                        iterations=1)
    text = stream.final_text()
    differences = jiwer.process_words(normalize_text(offline), normalize_text(text))
    record_run(benchmark, audio_seconds=len(audio) / subject.contract.model.sample_rate, backend=backend,
               precision="fp32", model="sentences", host=host, chunk_seconds=chunk_seconds,
               left_seconds=settings.left_seconds, right_seconds=settings.right_seconds,
               wer=word_error_rate([truth], [text]), offline_wer=word_error_rate([truth], [offline]),
               words_differing_from_offline=differences.substitutions + differences.deletions + differences.insertions,
               latency=emission_latency(events), steps=stream.steps)


@pytest.mark.parametrize("chunk_seconds", [0.5, 1.0, 2.0, 4.0])
def test_streaming_step(benchmark, record_run, host, backend, streamed_minute, chunk_seconds):
    """Coverage: the cost of one streaming step (one chunk pushed to a stream whose left context is full: the
    buffer encoded in its window, the chunk's frames decoded), fp32 sentences packages, decode-step path, the
    settings of test_streaming_by_chunk."""
    from exporters.decoding.streaming import Stream

    subject, audio, _, _ = streamed_minute
    transcriber, settings = streaming_setup(subject, backend, chunk_seconds)
    stream = Stream(transcriber, settings)
    rate = subject.contract.model.sample_rate
    primed = int((settings.left_seconds + settings.right_seconds + chunk_seconds) * rate)
    stream.push(audio[:primed])
    chunk = int(chunk_seconds * rate)
    starts = iter(range(primed, len(audio) - chunk, chunk))

    def next_chunk():
        start = next(starts)
        return (audio[start:start + chunk],), {}

    rounds = min(8, (len(audio) - primed) // chunk - 1)
    events = benchmark.pedantic(stream.push, setup=next_chunk, rounds=rounds, iterations=1)
    assert [e.kind for e in events][:1] == ["final"]  # each push took one step
    record_run(benchmark, audio_seconds=chunk_seconds, backend=backend, precision="fp32", model="sentences",
               host=host, chunk_seconds=chunk_seconds, left_seconds=settings.left_seconds,
               right_seconds=settings.right_seconds)


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_on_nemo(benchmark, record_run, host, tiny_model, tiny_contract, name):
    """Coverage: the same call computed by NeMo's own modules (torch, CPU)."""
    reference = nemo_runtime(tiny_model, tiny_contract, name, remember=False)
    benchmark(reference.predict, example_inputs(tiny_contract[name]))
    record_run(benchmark, audio_seconds=window_seconds(tiny_contract), backend="torch", precision="fp32",
               model="tiny", host=host, component=name)


@pytest.mark.macos
@pytest.mark.parametrize("compute_unit", COREML_COMPUTE_UNITS)
@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_on_coreml(benchmark, record_run, host, tiny_contract, tiny_packages, precision, name,
                             compute_unit):
    """Coverage: one call of each tiny package on Core ML, per compute unit (macOS only)."""
    if not coreml_available():
        pytest.skip("Core ML runs only on macOS")
    package = load(tiny_packages / tiny_contract[name].package_name, "coreml", compute_unit)
    benchmark(package.predict, example_inputs(tiny_contract[name]))
    record_run(benchmark, audio_seconds=window_seconds(tiny_contract), backend="coreml", precision=precision,
               model="tiny", host=host, component=name, compute_unit=compute_unit)


@pytest.fixture(scope="module")
def window_clip(tiny_contract, tmp_path_factory):
    """One full 15 s window of speech, as samples and as a WAV file."""
    from exporters.audio import FIXTURE_AUDIO_DIR, load_audio

    samples = load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", tiny_contract.model.sample_rate)
    samples = samples[:tiny_contract.window_samples]
    path = tmp_path_factory.mktemp("bench") / "window.wav"
    sf.write(path, samples, tiny_contract.model.sample_rate)
    return samples, path


@pytest.mark.parametrize("fused", [False, True], ids=["modular", "fused"])
def test_transcribe_window_on_packages(benchmark, record_run, host, tiny_contract, tiny_packages, precision,
                                       backend, window_clip, fused):
    """Coverage: one 15 s window transcribed end to end through the packages (modular or fused path)."""
    from exporters.decoding.transcriber import open_transcriber

    try:
        transcriber = open_transcriber(tiny_packages, backend, "single_step" if fused else "joint", fused)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))
    benchmark(transcriber.transcribe, window_clip[0])
    record_run(benchmark, audio_seconds=window_seconds(tiny_contract), backend=backend, precision=precision,
               model="tiny", host=host, path="fused" if fused else "modular")


@pytest.mark.parametrize("path", ["single_step", "decode_step"])
def test_decode_loop_per_window(benchmark, record_run, host, load_subject, backend, path):
    """Coverage: the greedy loop alone over one 15 s window's encoder frames of the trained sentences model
    (its held-out clips joined to fill the window): executor time, and model calls (deterministic: the same
    on any machine) for the single-step path (joint call per decision + decoder call per token) against the
    decode-step path (one call per decision)."""
    from exporters.audio import held_out_clips
    from exporters.decoding.chunking import plan_chunks
    from exporters.decoding.transcriber import JOINT_COMPONENT, open_transcriber

    subject = load_subject("sentences")
    contract = subject.contract
    clips, _ = held_out_clips("sentences", contract.model.sample_rate)
    window = np.concatenate(clips)[:contract.window_samples]
    try:
        transcriber = open_transcriber(subject.packages("fp32"), backend, path)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))
    (chunk,) = plan_chunks(len(window), contract.window_samples, transcriber.frame_samples,
                           contract.model.sample_rate, transcriber.chunking)
    packages_of_window = transcriber.window_for(chunk)
    encoder, valid = transcriber.encode(transcriber.window_audio(window, chunk, packages_of_window), packages_of_window)
    packages = dict(transcriber.runtimes)
    counters = {name: CountingRuntime(packages[name]) for name in ("decoder", JOINT_COMPONENT[path])}
    transcriber.runtimes.update(counters)
    hypothesis = transcriber.decode(encoder, valid)
    transcriber.runtimes.update(packages)
    benchmark.pedantic(transcriber.decode, args=(encoder, valid), rounds=3, warmup_rounds=1)
    calls = {name: counter.calls for name, counter in counters.items()}
    record_run(benchmark, audio_seconds=window_seconds(contract), backend=backend, precision="fp32",
               model="sentences", host=host, path=path, model_calls=sum(calls.values()), calls=calls,
               tokens=len(hypothesis.tokens))


@pytest.mark.parametrize("export", ["windowed", "15 s only"])
def test_short_clip_by_window(benchmark, record_run, host, load_subject, backend, export):
    """Coverage: transcribing a 2 s clip (the sentences model's held-out speech, fp32, decode-step path) with
    the 2.5 / 5 / 10 / 15 s multi-window export, where it runs in the 2.5 s function, against the
    single-window export, where it pays for a 15 s window. Compare the two means: the goal is >= 4x less."""
    from exporters.audio import held_out_clips

    subject = load_subject("sentences")
    rate = subject.contract.model.sample_rate
    clips, _ = held_out_clips("sentences", rate)
    clip = np.concatenate(clips)[:2 * rate]
    packages = subject.windowed("fp32") if export == "windowed" else subject.packages("fp32")
    transcript = transcribe_timed(benchmark, packages, backend, clip, rounds=5)
    record_run(benchmark, audio_seconds=2.0, backend=backend, precision="fp32", model="sentences", host=host,
               export=export, window_seconds=transcript.window_seconds)


@pytest.mark.full
@pytest.mark.parametrize("part", ["transcribe", "front end + encoder"])
@pytest.mark.parametrize("export", ["windowed", "15 s only"])
def test_short_clip_by_window_full_width(benchmark, record_run, host, load_subject, full_windowed_packages, backend,
                                        export, part):
    """Coverage: as test_short_clip_by_window on the full-width random model (where the encoder's compute, not
    the executor's per-op cost, dominates): a 2 s speech clip transcribed (decode-step path, fp32), or only
    its preprocessor + encoder calls, with a 2.5 / 5 / 10 / 15 s export of the packages it needs, in its
    2.5 s function, against the single-window export; and the bytes of that export's multifunction packages."""
    from exporters.decoding.chunking import plan_chunks

    subject = load_subject("full-random")
    rate = subject.contract.model.sample_rate
    clip = full_width_short_clip(subject)
    windowed = full_windowed_packages
    packages = windowed if export == "windowed" else subject.packages("fp32")
    if part == "transcribe":
        window_seconds = transcribe_timed(benchmark, packages, backend, clip, rounds=3).window_seconds
    else:
        transcriber = open_or_skip_transcriber(packages, backend)
        (chunk,) = plan_chunks(len(clip), transcriber.contract.window_samples, transcriber.frame_samples, rate,
                               transcriber.chunking)
        window = transcriber.window_for(chunk)
        audio = transcriber.window_audio(clip, chunk, window)
        benchmark.pedantic(transcriber.encode, args=(audio, window), rounds=3, warmup_rounds=1)
        window_seconds = [window.contract.window_samples / rate]
    record_run(benchmark, audio_seconds=2.0, backend=backend, precision="fp32", model="full-random", host=host,
               export=export, part=part, window_seconds=window_seconds, bytes=multifunction_bytes(windowed))


@pytest.mark.full
def test_short_clip_exports_alternating_full_width(benchmark, record_run, host, load_subject, full_windowed_packages,
                                                  backend):
    """Coverage: the whole-transcription ratio of test_short_clip_by_window_full_width measured in one process,
    the 2.5 / 5 / 10 / 15 s export and the 15 s one alternating round by round, so that a slow minute of a shared
    host lands on both: extra_info holds each export's round times and the median of the per-round ratios (15 s
    over windowed); the benchmark's own time is one round of both."""
    import statistics

    subject = load_subject("full-random")
    clip = full_width_short_clip(subject)
    transcribers = {"windowed": open_or_skip_transcriber(full_windowed_packages, backend),
                    "15 s only": open_or_skip_transcriber(subject.packages("fp32"), backend)}
    seconds = {name: [] for name in transcribers}

    def one_round():
        for name, transcriber in transcribers.items():
            start = time.perf_counter()
            transcriber.transcribe(clip)
            seconds[name].append(time.perf_counter() - start)
    benchmark.pedantic(one_round, rounds=ALTERNATING_ROUNDS, warmup_rounds=1)
    timed = {name: values[-ALTERNATING_ROUNDS:] for name, values in seconds.items()}  # the warm-up round dropped
    ratios = [single / windowed for windowed, single in zip(timed["windowed"], timed["15 s only"])]
    record_run(benchmark, audio_seconds=2.0, backend=backend, precision="fp32", model="full-random", host=host,
               seconds=timed, ratio_median=statistics.median(ratios))


def full_width_short_clip(subject) -> np.ndarray:
    """The first 2 s of the committed 4 s speech clip."""
    from exporters.audio import FIXTURE_AUDIO_DIR, load_audio

    rate = subject.contract.model.sample_rate
    return load_audio(FIXTURE_AUDIO_DIR / "short_4s.wav", rate)[:2 * rate]


def open_or_skip_transcriber(packages, backend: str):
    """open_transcriber on the decode-step path, or a skip with the reason the backend cannot run here."""
    from exporters.decoding.transcriber import open_transcriber

    try:
        return open_transcriber(packages, backend, "decode_step")
    except BackendUnavailable as reason:
        pytest.skip(str(reason))


def transcribe_timed(benchmark, packages, backend: str, clip: np.ndarray, rounds: int):
    """The decode-step transcription of `clip` with an export's packages, timed; its transcript."""
    transcriber = open_or_skip_transcriber(packages, backend)
    return benchmark.pedantic(transcriber.transcribe, args=(clip,), rounds=rounds, warmup_rounds=1)


def multifunction_bytes(packages) -> dict:
    """Per windowed package of an export: its bytes, its windows' bytes as separate packages, the largest
    window's alone, and the ratio of the first to the last (the goal: <= 1.05)."""
    sizes = {}
    for name, entry in read_metadata(packages)["packages"].items():
        if "functions" in entry:
            alone = entry["functions"][entry["default_function"]]["size_bytes_alone"]
            sizes[name] = {"multifunction": entry["size_bytes"], "largest_window_alone": alone,
                           "separate": sum(f["size_bytes_alone"] for f in entry["functions"].values()),
                           "versus_one_window": round(entry["size_bytes"] / alone, 3)}
    return sizes


@pytest.mark.parametrize("source", ["tiny", "sentences", pytest.param("full-random", marks=pytest.mark.full)])
def test_multifunction_package_bytes(benchmark, record_run, host, load_subject, source, request):
    """Coverage: bytes of each windowed fp32 package of the 2.5 / 5 / 10 / 15 s export (the full-width one: the
    packages of a decode-step transcription) against its windows saved as separate packages and against the 15 s
    window alone (the goal: <= 1.05x one window). The timed part only reads the export's metadata.json."""
    packages = request.getfixturevalue("full_windowed_packages") if source == "full-random" else \
        load_subject(source).windowed("fp32")
    sizes = benchmark(multifunction_bytes, packages)
    record_run(benchmark, audio_seconds=15.0, backend="none", precision="fp32", model=source, host=host, bytes=sizes)


@pytest.mark.parametrize("source", ["tiny", pytest.param("full-random", marks=pytest.mark.full)])
def test_opening_an_export_checks_every_checksum(benchmark, host, precision, source, request):
    """Coverage: what every command that opens an export pays first: read_metadata's sha256 of every package and
    file against metadata.json (page cache warm). No audio, so no RTFx: the export's bytes are recorded instead."""
    packages = request.getfixturevalue("full_packages" if source == "full-random" else "tiny_packages")
    metadata = benchmark.pedantic(read_metadata, args=(packages,), rounds=3, warmup_rounds=1)
    assert {entry["file"] for entry in metadata["packages"].values()} == {p.name for p in packages.glob("*.mlpackage")}
    benchmark.extra_info.update({"model": source, "precision": precision, "backend": "none", "host": host,
                                 "export_bytes": package_bytes(packages)})


@pytest.mark.parametrize("layout", ["chunked", "back_to_back"])
def test_transcribe_long_audio_overlap_cost(benchmark, record_run, host, tiny_contract, tiny_packages_fp32, backend,
                                            layout):
    """Coverage: 60 s of speech through the packages with the default chunking (8 s chunks, 3.2 s contexts)
    vs back-to-back windows with no context: the RTF cost of the overlap (compare the two rows' rtf)."""
    from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
    from exporters.decoding.chunking import Chunking
    from exporters.decoding.transcriber import open_transcriber

    rate = tiny_contract.model.sample_rate
    samples = np.resize(load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", rate), 60 * rate)
    frame = tiny_contract.model.subsampling_factor * tiny_contract.model.hop_length
    whole_window = (tiny_contract.window_samples // frame) * frame / rate
    chunking = Chunking() if layout == "chunked" else Chunking(whole_window, 0.0, 0.0)
    try:
        transcriber = open_transcriber(tiny_packages_fp32, backend, chunking=chunking)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))
    benchmark.pedantic(transcriber.transcribe, args=(samples,), rounds=3, warmup_rounds=1)
    record_run(benchmark, audio_seconds=60.0, backend=backend, precision="fp32", model="tiny", host=host,
               layout=layout, chunking=vars(chunking))


def test_transcribe_window_on_nemo(benchmark, record_run, host, tiny_model, tiny_contract, window_clip):
    """Coverage: NeMo's own transcribe() of the same window (torch reference)."""
    benchmark(nemo_transcribe, tiny_model, [str(window_clip[1])], batch_size=1)
    record_run(benchmark, audio_seconds=window_seconds(tiny_contract), backend="torch", precision="fp32",
               model="tiny", host=host)


def export_in_child(convert_in_child, model: str, precision: str, output_dir) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of `parakeet-coreml convert` in a fresh process (the peak is the
    one the child writes into metadata.json: its own VmHWM, not an rusage figure inherited from pytest)."""
    started = time.perf_counter()
    convert_in_child(model, precision, output_dir)
    seconds = time.perf_counter() - started
    return seconds, read_metadata(output_dir)["provenance"]["process_peak_rss_mb"]


def export_cost(benchmark, record_run, host, convert_in_child, model: str, precision: str, tmp_path,
                session_export=None) -> None:
    """Seconds and peak memory of a fresh `convert` child; in a plain (untimed) pytest run, a model whose
    session export already ran as such a child (conftest.EXPORTED_BY_CLI) reports that run's own figures
    instead of exporting a second time."""
    measured = {}

    def run():
        if benchmark.disabled and session_export is not None:
            measured["seconds"], measured["peak_rss_mb"] = recorded_export_cost(session_export)
        else:
            measured["seconds"], measured["peak_rss_mb"] = export_in_child(convert_in_child, model, precision,
                                                                           tmp_path / "out")

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert measured["seconds"] > 0 and measured["peak_rss_mb"] > 0
    record_run(benchmark, audio_seconds=15.0, backend="export", precision=precision, model=model, host=host,
               export_seconds=measured["seconds"], peak_rss_mb=measured["peak_rss_mb"])


def recorded_export_cost(export_dir) -> tuple[float, float]:
    """(summed per-package export seconds, process peak MiB) from a CLI export's metadata.json."""
    metadata = read_metadata(export_dir)
    return (sum(entry["export_seconds"] for entry in metadata["packages"].values()),
            metadata["provenance"]["process_peak_rss_mb"])


def test_export_cost_tiny(benchmark, record_run, host, convert_in_child, precision, tiny_packages, tmp_path):
    """Coverage: seconds and peak memory of exporting all tiny components (a fresh child under
    --benchmark-only; otherwise the session's own child export)."""
    export_cost(benchmark, record_run, host, convert_in_child, "tiny", precision, tmp_path,
                session_export=tiny_packages)


@pytest.mark.full
def test_export_cost_full_random(benchmark, record_run, host, convert_in_child, precision, full_packages,
                                 tmp_path):
    """Coverage: seconds and peak memory of exporting all full-width components (a fresh child under
    --benchmark-only; otherwise the session's own child export, so the suite exports it once)."""
    export_cost(benchmark, record_run, host, convert_in_child, "full-random", precision, tmp_path,
                session_export=full_packages)


@pytest.mark.full
@pytest.mark.parametrize("side, encoder_precision", [("mil", "fp32"), ("mil", "fp16"), ("torch", "fp32")],
                         ids=["fp32-mil", "fp16-mil", "fp32-torch"])
def test_full_random_encoder(benchmark, record_run, host, load_subject, side, encoder_precision):
    """Coverage: the 24-layer encoder on one 15 s window: MIL executor (each precision) vs the torch encoder
    (NeMo's, fp32), same run."""
    subject = load_subject("full-random")
    contract = subject.contract
    inputs = example_inputs(contract["encoder"])
    runtime = (load(subject.packages(encoder_precision) / contract["encoder"].package_name, "mil") if side == "mil"
               else nemo_runtime(subject.model, contract, "encoder", remember=False))
    benchmark.pedantic(runtime.predict, args=(inputs,), rounds=3, warmup_rounds=1)
    record_run(benchmark, audio_seconds=window_seconds(contract), backend=side, precision=encoder_precision,
               model="full-random", host=host,
               process_peak_rss_mb=process_peak_rss_mb())


# The full-width encoder's variants: (precision, compression). Plain runs judge the uncompressed exports the suite
# makes anyway and int8 (the quickest to compress); --benchmark-only measures every variant (~25 min of k-means on
# 2 cores when not cached).
FULL_WIDTH_VARIANTS = (("fp32", NONE), ("fp16", NONE), ("fp16", "int8"), ("fp16", "palette8"), ("fp16", "palette6"),
                       ("fp16", "palette4"), ("fp16", "int4-block32"))
FULL_WIDTH_VARIANTS_PLAIN_RUN = FULL_WIDTH_VARIANTS[:3]


def pytest_generate_tests(metafunc):
    if "full_width_variant" in metafunc.fixturenames:
        measured = metafunc.config.getoption("benchmark_only", False)
        chosen = FULL_WIDTH_VARIANTS if measured else FULL_WIDTH_VARIANTS_PLAIN_RUN
        metafunc.parametrize("full_width_variant", chosen, ids=[f"{p}-{v}" for p, v in chosen])


@pytest.mark.full
def test_full_width_encoder_variant(benchmark, record_run, host, load_subject, backend, open_or_skip,
                                    full_width_variant):
    """Coverage: the full-width encoder of each variant (`convert --model full-random --components encoder
    --compress V`) passes its own tolerance row against NeMo on the 16 s clip (the case `compare` judges first),
    with its bytes, max |Δ| and PSNR, the export's peak memory, and one encoder call on the backend timed."""
    precision, variant = full_width_variant
    subject = load_subject("full-random")
    packages = (subject.packages(precision) if variant == NONE
                else subject.compressed(precision, variant, ("encoder",)))
    encoder_dir = packages / subject.contract["encoder"].package_name
    package = open_or_skip(encoder_dir, backend)
    gate = GateContext(subject.model, subject.contract, precision,
                       compressed={} if variant == NONE else {"encoder": variant})
    audio = fit_window(load_audio(FIXTURE_AUDIO_DIR / "long_16s.wav", subject.contract.model.sample_rate),
                       subject.contract.window_samples)
    diffs = encoder_gate(gate, package, "long_16s", *audio)
    assert_passed(diffs)
    mel, _ = nemo_mel_and_encoded(subject.model, subject.contract, *audio)
    benchmark.pedantic(package.predict, args=(mel,), rounds=1 if benchmark.disabled else 3, warmup_rounds=0)
    encoder = next(d for d in diffs if d.output == "encoder")
    metadata = read_metadata(packages)
    record_run(benchmark, audio_seconds=window_seconds(subject.contract), backend=backend, precision=precision,
               model="full-random", host=host, variant=variant, encoder_bytes=package_bytes(encoder_dir),
               max_abs=encoder.max_abs, psnr=psnr_db(encoder.expected, encoder.actual),
               tolerance=encoder.tolerance.describe(),
               export_peak_mb=metadata["provenance"]["process_peak_rss_mb"])


CORPUS_REPEATS = 8  # the sentences held-out set this many times over when timed (once in plain runs)


@pytest.mark.parametrize("runner", ["jobs 1", "jobs 2", "ray"])
def test_evaluate_corpus(benchmark, record_run, host, backend, load_subject, runner):
    """Coverage: `evaluate` over the sentences held-out set (fp32 packages and NeMo on each file) in one process,
    in two worker processes, and on a local two-CPU Ray cluster: wall time from start (workers opening the
    packages and NeMo included) to the last record, the rate once every worker is ready (audio seconds per
    second), and the largest resident memory a worker reached."""
    from exporters.corpus import Entry, EvaluateWork, run

    subject = load_subject("sentences")
    repeats = 1 if benchmark.disabled else CORPUS_REPEATS
    entries = [Entry(index, path, text) for index, (path, text) in
               enumerate(held_out_manifest("sentences") * repeats)]
    work = EvaluateWork(subject.packages("fp32"), backend=backend)
    ray = None
    if runner == "ray":
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        outcome = benchmark.pedantic(run, args=(work, entries), kwargs={
            "jobs": int(runner.split()[-1]) if runner.startswith("jobs") else None,
            "ray": "auto" if ray else None, "progress": False}, rounds=1, iterations=1)
    finally:
        if ray:
            ray.shutdown()
    assert not [r for r in outcome.records if "error" in r]
    in_this_process = runner == "jobs 1"  # its peak is pytest's, which holds every model the session loaded
    record_run(benchmark, audio_seconds=sum(r["seconds"] for r in outcome.records), backend=backend,
               precision="fp32", model="sentences", host=host, runner=runner, files=len(entries),
               worker_peak_mb=None if in_this_process else outcome.worker_peak_bytes / 2**20,
               steady_rate=outcome.steady_rate)


@pytest.mark.full
@pytest.mark.parametrize("command", ["transcribe", "evaluate"])
def test_corpus_worker_memory_full_width(benchmark, record_run, host, backend, load_subject, command):
    """Coverage: the largest resident memory a worker reaches on the full-width (627 M parameter) fp32 export, two
    workers over four held-out digit clips: `transcribe` (the packages) and `evaluate` (the packages and NeMo)."""
    from exporters.corpus import Entry, EvaluateWork, TranscribeWork, run

    packages = load_subject("full-random").packages("fp32")
    entries = [Entry(index, path, text) for index, (path, text) in enumerate(held_out_manifest("digits")[:4])]
    work = TranscribeWork(packages, backend=backend) if command == "transcribe" else \
        EvaluateWork(packages, backend=backend)
    outcome = benchmark.pedantic(run, args=(work, entries), kwargs={"jobs": 2, "progress": False}, rounds=1,
                                 iterations=1)
    assert not [r for r in outcome.records if "error" in r]
    record_run(benchmark, audio_seconds=sum(work.audio_seconds(r) for r in outcome.records), backend=backend,
               precision="fp32", model="full-random", host=host, runner=f"{command} full-width", files=len(entries),
               worker_peak_mb=outcome.worker_peak_bytes / 2**20, steady_rate=outcome.steady_rate)
