"""Language lock: which pieces a script or a list allows, and decisions under a lock equal NeMo's with the same
bias added to its joint logits (trained sentences model, so a flipped decision is a real bug)."""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece as spm
from typer.testing import CliRunner

from exporters.audio import FIXTURE_AUDIO_DIR, load_audio
from exporters.cli import app
from exporters.decoding.language_lock import BLOCKED, LanguageLock, script_pattern, written_in
from exporters.decoding.transcriber import JOINT_MODES
from exporters.errors import UserError
from exporters.reference import hypothesis_decisions, nemo_token_bias

runner = CliRunner()


@pytest.mark.parametrize("piece, scripts, allowed", [
    ("▁hello", ("latin",), True),
    ("▁élan", ("latin",), True),          # Latin-1 letters
    ("ł", ("latin",), True),              # Latin Extended-A
    ("▁привет", ("latin",), False),
    ("▁привет", ("cyrillic",), True),
    ("▁ωmega", ("latin",), False),        # one Greek letter is enough to block
    ("▁ωmega", ("latin", "greek"), True),
    (",", ("cyrillic",), True),           # punctuation belongs to no script
    ("▁1999", ("greek",), True),
    ("▁", ("cyrillic",), True),            # a bare word boundary
    ("é", ("latin",), True),              # e + combining acute accent (Inherited)
    ("中", ("latin",), False),
])
def test_script_of_a_piece(piece, scripts, allowed):
    """Coverage: Unicode script membership of each letter, ▁ and script-less characters neutral."""
    assert written_in(piece, script_pattern(tuple(s.title() for s in scripts))) is allowed


def test_unknown_script_is_a_user_error():
    with pytest.raises(UserError, match="unknown script Klingon"):
        script_pattern(("Klingon",))


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_packages_fp32):
    return spm.SentencePieceProcessor(model_file=str(tiny_packages_fp32 / "tokenizer.model"))


def test_token_list_bias(tiny_tokenizer, tiny_contract):
    """Coverage: listed ids and pieces get 0, blank (= V) gets 0, every other token BLOCKED."""
    size = tiny_contract.model.num_token_logits
    bias = LanguageLock(tokens=("3", tiny_tokenizer.id_to_piece(10))).bias(tiny_tokenizer, size)
    assert bias.shape == (size,) and bias.dtype == np.float32
    assert set(np.flatnonzero(bias == 0)) == {3, 10, size - 1}
    assert np.all(bias[bias != 0] == BLOCKED)


@pytest.mark.parametrize("tokens, message", [(("99999",), "out of range"), (("▁nosuchpiece",), "not a piece"),
                                             ((), "at least one")])
def test_bad_token_lists(tiny_tokenizer, tokens, message):
    with pytest.raises(UserError, match=message):
        LanguageLock(tokens=tokens).allowed_ids(tiny_tokenizer)


def test_latin_lock_blocks_only_non_latin_pieces(load_subject):
    """Coverage: on the sentences model's own vocabulary (English), a Latin lock blocks nothing and a Cyrillic
    lock blocks exactly the pieces holding a letter."""
    model = load_subject("sentences").model
    tokenizer = spm.SentencePieceProcessor(model_proto=model.tokenizer.tokenizer.serialized_model_proto())
    size = tokenizer.get_piece_size() + 1
    assert np.all(LanguageLock(("latin",)).bias(tokenizer, size) == 0)
    cyrillic = LanguageLock(("cyrillic",)).bias(tokenizer, size)
    has_letter = [any(ch.isalpha() for ch in tokenizer.id_to_piece(i)) for i in range(size - 1)]
    assert list(cyrillic[:-1] == BLOCKED) == has_letter and cyrillic[-1] == 0


@pytest.fixture(scope="module")
def locked_case(load_subject, case_for):
    """The sentences model, its held-out clips, and a lock forbidding a third of the tokens NeMo emits on them;
    NeMo transcribe() on each file with that lock applied to its joint logits, and without."""
    sentences = load_subject("sentences")
    rate = sentences.contract.model.sample_rate
    clips = {path.stem: load_audio(path, rate) for path in sorted((FIXTURE_AUDIO_DIR / "sentences").glob("*.wav"))[:3]}
    unlocked = case_for(sentences, clips)
    emitted = sorted({int(t) for h in unlocked.on_file.values() for t in h.y_sequence})
    tokenizer = spm.SentencePieceProcessor(model_proto=sentences.model.tokenizer.tokenizer.serialized_model_proto())
    forbidden = set(emitted[::3])
    lock = LanguageLock(tokens=tuple(str(i) for i in range(tokenizer.get_piece_size()) if i not in forbidden))
    bias = lock.bias(tokenizer, sentences.contract.model.num_token_logits)
    with nemo_token_bias(sentences.model, bias):
        locked = case_for(sentences, clips)
    return sentences, clips, forbidden, bias, unlocked, locked


@pytest.mark.parametrize("joint_mode", JOINT_MODES)
def test_locked_decisions_equal_nemo_with_the_same_bias(locked_case, transcriber_for, joint_mode):
    """Coverage: with the lock, tokens, frames and durations over the fp32 packages equal NeMo transcribe()
    with the lock's bias added to its token logits, per joint mode; the lock changed NeMo's output, and no
    forbidden token is emitted."""
    sentences, clips, forbidden, bias, unlocked, locked = locked_case
    transcriber = transcriber_for(sentences.packages("fp32"), joint_mode)
    transcriber.token_bias = bias
    for name, samples in clips.items():
        transcript = transcriber.transcribe(samples)
        assert transcript.decisions() == hypothesis_decisions(locked.on_file[name]), name
        assert not {t.token_id for t in transcript.tokens} & forbidden, name
    assert [h.text for h in locked.on_file.values()] != [h.text for h in unlocked.on_file.values()]


def test_transcribe_cli_allow_tokens(locked_case, tmp_path):
    """Coverage: `transcribe --allow-tokens FILE` prints NeMo's locked text (the list holds every token but the
    forbidden ones)."""
    sentences, clips, _, bias, _, locked = locked_case
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("\n".join(str(i) for i in np.flatnonzero(bias[:-1] == 0)) + "\n")
    name = next(iter(clips))
    audio = FIXTURE_AUDIO_DIR / "sentences" / f"{name}.wav"
    result = runner.invoke(app, ["transcribe", str(audio), "--packages", str(sentences.packages("fp32")),
                                 "--backend", "mil", "--allow-tokens", str(allowed)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == locked.on_file[name].text


def test_transcribe_cli_allow_script_latin_changes_nothing_in_english(load_subject, tiny_packages_fp32):
    """Coverage: `--allow-script latin` on a Latin-only vocabulary prints the unlocked text."""
    audio = FIXTURE_AUDIO_DIR / "short_4s.wav"
    common = ["transcribe", str(audio), "--packages", str(tiny_packages_fp32), "--backend", "mil"]
    plain = runner.invoke(app, common)
    locked = runner.invoke(app, [*common, "--allow-script", "latin"])
    assert plain.exit_code == locked.exit_code == 0
    assert locked.output == plain.output


@pytest.mark.parametrize("option, value, fragment", [("--allow-script", "klingon", "unknown script"),
                                                     ("--allow-tokens", "/nonexistent/list.txt", "cannot read")])
def test_transcribe_cli_bad_lock(tiny_packages_fp32, one_line_error, option, value, fragment):
    audio = FIXTURE_AUDIO_DIR / "short_4s.wav"
    one_line_error(runner.invoke(app, ["transcribe", str(audio), "--packages", str(tiny_packages_fp32),
                                       "--backend", "mil", option, value]), fragment)
