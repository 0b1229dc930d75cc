"""greedy_tdt_decode vs NeMo's GreedyTDTInfer and GreedyBatchedTDTInfer on the same scripted joint outputs.

Both sides see one logits table [frame, emissions so far, V+1+K]: NeMo through stub decoder/joint
modules (decoder output = number of tokens fed so far, encoder features = (utterance, frame)), our
loop through plain callables. Tokens, frames and durations must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.decoding import TdtHypothesis, decide_from_logits, greedy_tdt_decode
from exporters.inspect_model import batched_semantics

BATCHED = batched_semantics()  # the installed NeMo's greedy_batch rule

# The loop is cheap: three times the active profile's examples (conftest.py holds the only profiles).
LOOP_SETTINGS = settings(max_examples=3 * settings.default.max_examples)

PARAKEET_DURATIONS = (0, 1, 2, 3, 4)
MAX_SYMBOLS = (1, 2, 3, 10, None)
MAX_EMISSION_ROWS = 96


@pytest.fixture(scope="module")
def nemo_greedy():
    """NeMo's greedy TDT classes, imported once (importing NeMo is slow)."""
    from nemo.collections.asr.parts.submodules import rnnt_greedy_decoding

    return rnnt_greedy_decoding


# ---- stubs NeMo decodes with -------------------------------------------------------------------

class CountingDecoder(torch.nn.Module):
    """Stub prediction network: output and state are the number of non-blank tokens fed so far."""

    blank_as_pad = True

    def __init__(self, blank_id: int, start_count: int = 0):
        super().__init__()
        self.blank_id = blank_id
        self.start_count = start_count

    def predict(self, y=None, state=None, add_sos=False, batch_size=None):
        """Blank (or None, NeMo's SOS) leaves the count alone; every other token adds one."""
        batch = y.shape[0] if y is not None else (batch_size or 1)
        counts = self._counts(batch) if state is None else state[0].clone()
        if y is not None:
            counts += (y[:, -1] != self.blank_id).long()
        return counts.view(batch, 1, 1).float(), [counts]

    def _counts(self, batch: int) -> torch.Tensor:
        return torch.full((batch,), self.start_count, dtype=torch.long)

    def initialize_state(self, encoder_output):
        return [self._counts(encoder_output.shape[0])]

    def batch_select_state(self, states, idx):
        return None if states is None else [states[0][idx]]

    def batch_concat_states(self, states):
        return [torch.stack([state[0] for state in states])]

    def batch_replace_states_mask(self, src_states, dst_states, mask):
        torch.where(mask, src_states[0], dst_states[0], out=dst_states[0])

    def batch_split_states(self, states):
        return [[count] for count in states[0]]


class ScriptedJoint(torch.nn.Module):
    """Stub joint: logits = table[utterance, frame, min(emissions, rows - 1)], read off its inputs."""

    def __init__(self, tables: np.ndarray):
        super().__init__()
        self.tables = torch.from_numpy(tables)  # [B, T, rows, V+1+K]
        self.num_classes_with_blank = tables.shape[-1]

    def joint(self, f, g):
        utterances, frames = f[:, 0, 0].long(), f[:, 0, 1].long()
        rows = g[:, 0, 0].long().clamp(max=self.tables.shape[2] - 1)
        return self.tables[utterances, frames, rows][:, None, None, :]

    def project_encoder(self, encoder_output):
        return encoder_output

    def project_prednet(self, decoder_output):
        return decoder_output

    def joint_after_projection(self, f, g):
        return self.joint(f, g)


def encoder_features(batch: int, num_frames: int) -> torch.Tensor:
    """[B, 2, T] features whose frame t of utterance b is (b, t), so the stub joint knows where it is."""
    features = torch.zeros(batch, 2, num_frames)
    features[:, 0, :] = torch.arange(batch, dtype=torch.float32)[:, None]
    features[:, 1, :] = torch.arange(num_frames, dtype=torch.float32)[None, :]
    return features


# ---- scenarios ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """One utterance's scripted joint outputs and the decoding settings."""

    table: np.ndarray  # [T, rows, V+1+K]
    vocab_size: int
    durations: tuple[int, ...]
    max_symbols: int | None

    @property
    def num_frames(self) -> int:
        return self.table.shape[0]

    @property
    def blank_id(self) -> int:
        return self.vocab_size


def scripted_table(rng, num_frames, rows, vocab_size, durations, blank_rate, duration_weights, ties):
    """Logits whose argmaxes follow the requested blank rate and duration weights.

    Ties-free tables use distinct values on a 1/8 grid (far apart, so NeMo's log_softmax cannot merge
    them); tie tables use 0/1 values, so the winner is often one of several equal maxima.
    """
    num_tokens, num_durations = vocab_size + 1, len(durations)
    blank = rng.random((num_frames, rows)) < blank_rate
    tokens = np.where(blank, vocab_size, rng.integers(0, vocab_size, (num_frames, rows)))
    duration_indices = rng.choice(num_durations, size=(num_frames, rows), p=duration_weights)
    return np.concatenate([scripted_part(rng, tokens, num_tokens, ties),
                           scripted_part(rng, duration_indices, num_durations, ties)], axis=-1)


def scripted_part(rng, winners, width, ties):
    """[T, rows, width] values whose maximum sits at `winners` (shared with equal values when `ties`)."""
    if ties:
        values = rng.integers(0, 2, winners.shape + (width,)).astype(np.float32)
    else:
        values = rng.permuted(np.broadcast_to(np.arange(width), winners.shape + (width,)), axis=-1)
        values = (values - width / 2).astype(np.float32) / 8
    np.put_along_axis(values, winners[..., None], values.max(-1, keepdims=True) + (0 if ties else 0.125), -1)
    return values


def make_terminating(table, vocab_size, durations, for_sequential):
    """Steer argmaxes away from duration 0 where max_symbols=None would loop forever.

    The last emission row repeats for ever more emissions, so a zero-duration token there never ends;
    GreedyTDTInfer also repeats a blank with duration 0 endlessly, wherever it occurs.
    """
    zero_indices = [i for i, d in enumerate(durations) if d == 0]
    if not zero_indices:
        return table
    table = table.copy()
    duration_logits = table[..., vocab_size + 1:]
    stuck = np.zeros(table.shape[:2], dtype=bool)
    stuck[:, -1] = True
    if for_sequential:
        stuck |= table[..., :vocab_size + 1].argmax(-1) == vocab_size
    lowest = duration_logits.min(-1) - 1
    for index in zero_indices:
        duration_logits[..., index] = np.where(stuck, lowest, duration_logits[..., index])
    return table


durations_lists = st.one_of(
    st.just(PARAKEET_DURATIONS),
    st.lists(st.integers(0, 12), min_size=1, max_size=5, unique=True)
    .filter(lambda ds: max(ds) > 0).map(lambda ds: tuple(sorted(ds))),
)


@st.composite
def scenarios(draw, *, vocab_sizes=st.integers(3, 6), blank_rates=(0.2, 0.5, 0.8), zero_weights=(0.0, 0.2, 0.5),
              durations=durations_lists, frames=st.integers(1, 40), max_symbols=st.sampled_from(MAX_SYMBOLS),
              ties=st.just(False), weights_for=None, for_sequential=True):
    """A Scenario; `weights_for(durations)` overrides the chance of each duration index winning."""
    vocab_size = draw(vocab_sizes)
    duration_values = draw(durations)
    num_frames, limit = draw(frames), draw(max_symbols)
    rows = min(num_frames * (limit or 3), MAX_EMISSION_ROWS) + 1
    if weights_for is None:
        weights = zero_weighted(duration_values, draw(st.sampled_from(zero_weights)))
    else:
        weights = weights_for(duration_values)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    table = scripted_table(rng, num_frames, rows, vocab_size, duration_values,
                           draw(st.sampled_from(blank_rates)), weights, draw(ties))
    if limit is None:
        table = make_terminating(table, vocab_size, duration_values, for_sequential)
    return Scenario(table, vocab_size, duration_values, limit)


def zero_weighted(durations, zero_weight):
    """Weights giving duration 0 (if listed) `zero_weight` and the rest equal shares."""
    zero = np.array([d == 0 for d in durations], dtype=float)
    if not zero.any() or zero.all():
        return np.full(len(durations), 1 / len(durations))
    return np.where(zero, zero_weight / zero.sum(), (1 - zero_weight) / (len(durations) - zero.sum()))


def only(value):
    """Weights for a durations list that always picks `value` (the list must contain it)."""
    return lambda durations: np.array([float(d == value) for d in durations])


def longest(durations):
    """Weights favouring the longest durations, to jump past the end."""
    weights = np.arange(1, len(durations) + 1, dtype=float) ** 3
    return weights / weights.sum()


# ---- both sides --------------------------------------------------------------------------------

def ours(scenario: Scenario, semantics: str, start: TdtHypothesis | None = None,
         fed: list | None = None) -> TdtHypothesis:
    """Our loop on the scenario's table, an int emission count as decoder output and state.

    Every (token, state) given to predict is appended to `fed` when it is a list.
    """
    blank_id, rows = scenario.blank_id, scenario.table.shape[1]

    def predict(token, count):
        if fed is not None:
            fed.append((token, count))
        count = (count or 0) + (token != blank_id)
        return count, count

    def decide(frame, count):
        return decide_from_logits(scenario.table[frame, min(count, rows - 1)], scenario.vocab_size + 1)

    return greedy_tdt_decode(scenario.num_frames, predict, decide, blank_id=blank_id,
                             durations=scenario.durations, max_symbols=scenario.max_symbols,
                             start=start, semantics=semantics)


def nemo_decoder(nemo_greedy, scenario: Scenario, semantics: str, tables=None, start_count: int = 0):
    """NeMo's GreedyBatchedTDTInfer (BATCHED) or GreedyTDTInfer ("sequential") over the stubs."""
    decoder = CountingDecoder(scenario.blank_id, start_count)
    joint = ScriptedJoint(scenario.table[None] if tables is None else tables)
    common = dict(blank_index=scenario.blank_id, durations=list(scenario.durations),
                  max_symbols_per_step=scenario.max_symbols, include_duration=True)
    if semantics != "sequential":
        return nemo_greedy.GreedyBatchedTDTInfer(decoder, joint, use_cuda_graph_decoder=False, **common)
    return nemo_greedy.GreedyTDTInfer(decoder, joint, **common)


def run_nemo(infer, lengths, partial_hypotheses=None):
    """NeMo's public forward on (b, t) features for utterances of the given lengths."""
    features = encoder_features(len(lengths), max(lengths))
    kwargs = {} if partial_hypotheses is None else {"partial_hypotheses": partial_hypotheses}
    (hypotheses,) = infer(encoder_output=features, encoded_lengths=torch.tensor(lengths), **kwargs)
    return hypotheses


def as_ints(values) -> list[int]:
    return [int(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]


def emissions(hypothesis) -> tuple[list[int], list[int], list[int]]:
    """(tokens, frames, durations) of a NeMo Hypothesis or a TdtHypothesis."""
    if isinstance(hypothesis, TdtHypothesis):
        return hypothesis.tokens, hypothesis.frames, hypothesis.durations
    tokens, frames, durations = (as_ints(hypothesis.y_sequence), as_ints(hypothesis.timestamp),
                                 as_ints(hypothesis.token_duration))
    # batched_hyps_to_hypotheses returns an empty token_duration when every duration is 0
    return tokens, frames, durations or [0] * len(tokens)


def assert_matches_nemo(nemo_greedy, scenario: Scenario, semantics_list=(BATCHED, "sequential")):
    """Our loop and NeMo's emit the same tokens, frames and durations, for each semantics."""
    for semantics in semantics_list:
        (expected,) = run_nemo(nemo_decoder(nemo_greedy, scenario, semantics), [scenario.num_frames])
        assert emissions(ours(scenario, semantics)) == emissions(expected), semantics


# ---- property tests against NeMo ---------------------------------------------------------------

@LOOP_SETTINGS
@given(scenarios())
def test_random_logits_match_nemo(nemo_greedy, scenario):
    """Ties-free random logits, every max_symbols, varied durations lists: same emissions as NeMo."""
    assert_matches_nemo(nemo_greedy, scenario)


@LOOP_SETTINGS
@given(scenarios(blank_rates=(0.0, 0.05), zero_weights=(0.8, 0.95, 1.0), durations=st.just(PARAKEET_DURATIONS)))
def test_zero_duration_token_runs_match_nemo(nemo_greedy, scenario):
    """Long runs of zero-duration tokens on one frame, hitting max_symbols: same emissions as NeMo."""
    assert_matches_nemo(nemo_greedy, scenario)


@LOOP_SETTINGS
@given(scenarios(blank_rates=(0.5, 0.8, 1.0), zero_weights=(0.5, 0.9, 1.0), durations=st.just(PARAKEET_DURATIONS),
                 max_symbols=st.sampled_from((1, 2, 3, 10)), for_sequential=False))
def test_blank_with_zero_duration_matches_nemo(nemo_greedy, scenario):
    """Blank predicted with duration 0 (bounded max_symbols): same emissions as both NeMo loops."""
    assert_matches_nemo(nemo_greedy, scenario)


@LOOP_SETTINGS
@given(scenarios(blank_rates=(0.5, 0.8, 1.0), zero_weights=(0.5, 0.9), durations=st.just(PARAKEET_DURATIONS),
                 max_symbols=st.none(), for_sequential=False))
def test_blank_with_zero_duration_unbounded_matches_batched_nemo(nemo_greedy, scenario):
    """Blank with duration 0 and max_symbols=None: the batched loop advances a frame, as NeMo's does."""
    assert_matches_nemo(nemo_greedy, scenario, (BATCHED,))


def test_sequential_refuses_endless_blank_with_zero_duration():
    """GreedyTDTInfer would loop forever on blank+duration 0 without max_symbols; our loop raises."""
    with pytest.raises(ValueError, match="forever"):
        greedy_tdt_decode(3, lambda token, state: (0, 0), lambda frame, output: (4, 0), blank_id=4,
                          durations=PARAKEET_DURATIONS, max_symbols=None, semantics="sequential")


@LOOP_SETTINGS
@given(scenarios(blank_rates=(1.0,)))
def test_all_blank_matches_nemo(nemo_greedy, scenario):
    """Only blanks: nothing emitted, by us or NeMo."""
    assert_matches_nemo(nemo_greedy, scenario)
    assert ours(scenario, BATCHED).tokens == []


@LOOP_SETTINGS
@given(scenarios(blank_rates=(0.0,), durations=st.just(PARAKEET_DURATIONS), weights_for=only(1)))
def test_every_frame_emitting_matches_nemo(nemo_greedy, scenario):
    """A token with duration 1 on every frame: same as NeMo, incl. the batched loop dropping the last frame's token
    (NeMo 2.x) or keeping it (NeMo 3.0)."""
    assert_matches_nemo(nemo_greedy, scenario)
    assert (scenario.num_frames - 1 in ours(scenario, BATCHED).frames) == (BATCHED == "batched_keeps_end")


@LOOP_SETTINGS
@given(scenarios(blank_rates=(0.0, 0.3, 0.7), frames=st.integers(1, 12), weights_for=longest,
                 durations=st.sampled_from([(0, 1, 2, 4, 8), (0, 3, 7, 13), (2, 5, 11, 17), PARAKEET_DURATIONS])))
def test_durations_jumping_past_the_end_match_nemo(nemo_greedy, scenario):
    """Durations that jump to or past the last frame: same emissions as NeMo."""
    assert_matches_nemo(nemo_greedy, scenario)


@LOOP_SETTINGS
@given(scenarios(ties=st.just(True), zero_weights=(0.0, 0.5), blank_rates=(0.2, 0.5)))
def test_exact_ties_break_like_nemo(nemo_greedy, scenario):
    """Logits with many exactly equal maxima: ties broken to the lowest index, as NeMo does."""
    assert_matches_nemo(nemo_greedy, scenario)


@st.composite
def scenario_groups(draw, size: int | None = None):
    """2-4 scenarios (or exactly `size`) sharing vocabulary, durations and max_symbols."""
    shared = dict(vocab_sizes=st.just(draw(st.integers(3, 6))), durations=st.just(draw(durations_lists)),
                  max_symbols=st.just(draw(st.sampled_from(MAX_SYMBOLS))))
    count = size or draw(st.integers(2, 4))
    return [draw(scenarios(**shared)) for _ in range(count)]


@LOOP_SETTINGS
@given(scenario_groups())
def test_batched_nemo_decodes_each_utterance_like_our_loop(nemo_greedy, batch):
    """Padded utterances of different lengths in one GreedyBatchedTDTInfer call: same tokens and frames.

    Durations are not compared: with B > 1 NeMo's inner loop overwrites the recorded duration of an
    utterance that already found its token with the joint's pick at that utterance's next frame.
    """
    infer = nemo_decoder(nemo_greedy, batch[0], BATCHED, tables=stack_padded([s.table for s in batch]))
    for scenario, expected in zip(batch, run_nemo(infer, [s.num_frames for s in batch])):
        assert emissions(ours(scenario, BATCHED))[:2] == emissions(expected)[:2]


def stack_padded(tables: list[np.ndarray]) -> np.ndarray:
    """[B, T_max, rows_max, N], padding with each table's last frame and row (rows past the end repeat it)."""
    frames = max(t.shape[0] for t in tables)
    rows = max(t.shape[1] for t in tables)
    return np.stack([np.pad(t, ((0, frames - t.shape[0]), (0, rows - t.shape[1]), (0, 0)), mode="edge")
                     for t in tables])


# ---- seams between windows ---------------------------------------------------------------------

@LOOP_SETTINGS
@given(scenario_groups(size=2))
def test_seam_matches_nemo_partial_hypotheses(nemo_greedy, windows):
    """Second window started from the first's result decodes as GreedyTDTInfer with partial_hypotheses."""
    first, second = windows
    (nemo_first,) = run_nemo(nemo_decoder(nemo_greedy, first, "sequential"), [first.num_frames])
    (nemo_second,) = run_nemo(nemo_decoder(nemo_greedy, second, "sequential"), [second.num_frames], [nemo_first])
    # y_sequence continues the partial hypothesis; timestamp and token_duration restart with the window
    expected = (as_ints(nemo_second.y_sequence)[len(nemo_first.y_sequence):], as_ints(nemo_second.timestamp),
                as_ints(nemo_second.token_duration))
    assert emissions(ours(second, "sequential", start=ours(first, "sequential"))) == expected
    state_before_last_token = None if nemo_first.dec_state is None else int(nemo_first.dec_state[0])
    nemo_convention = TdtHypothesis(last_token=nemo_first.last_token, decoder_state=state_before_last_token)
    assert emissions(ours(second, "sequential", start=nemo_convention)) == expected


@LOOP_SETTINGS
@given(scenario_groups(size=2))
def test_batched_seam_matches_nemo_with_decoder_context_carried(nemo_greedy, windows):
    """Second batched window = NeMo's batched loop from frame 0 with the decoder having seen window 1's tokens."""
    first, second = windows
    (nemo_first,) = run_nemo(nemo_decoder(nemo_greedy, first, BATCHED), [first.num_frames])
    carried = len(emissions(nemo_first)[0])
    (nemo_second,) = run_nemo(nemo_decoder(nemo_greedy, second, BATCHED, start_count=carried), [second.num_frames])
    assert emissions(ours(second, BATCHED, start=ours(first, BATCHED))) == emissions(nemo_second)


# ---- predict calls -----------------------------------------------------------------------------

@LOOP_SETTINGS
@given(scenario_groups(size=2), st.sampled_from((BATCHED, "sequential")))
def test_predict_runs_once_per_emitted_token_plus_start(windows, semantics):
    """predict sees SOS (blank, None) then each emitted token once; a continued window needs no SOS."""
    first, second = windows
    fed: list[tuple[int, object]] = []
    result = ours(first, semantics, fed=fed)
    assert fed == [(first.blank_id, None)] + [(token, count) for count, token in enumerate(result.tokens)]
    fed.clear()
    continued = ours(second, semantics, start=result, fed=fed)
    assert [token for token, _ in fed] == continued.tokens


def test_no_frames_means_no_predict_calls():
    """An empty window emits nothing and never runs the decoder."""
    def refuse(token, state):
        raise AssertionError("predict called")
    result = greedy_tdt_decode(0, refuse, refuse, blank_id=3, durations=PARAKEET_DURATIONS, max_symbols=10)
    assert (result.tokens, result.frames, result.durations, result.decoder_output) == ([], [], [], None)


# ---- host-side argmax --------------------------------------------------------------------------

logit_rows = st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0]), min_size=2, max_size=16)


@LOOP_SETTINGS
@given(logit_rows, st.data())
def test_decide_from_logits_breaks_ties_like_torch(values, data):
    """Rows full of equal maxima: same token and duration index as torch.max(dim) and torch.argmax."""
    num_token_logits = data.draw(st.integers(1, len(values) - 1))
    row = np.array(values, dtype=np.float32)
    tokens, duration_logits = torch.from_numpy(row[:num_token_logits]), torch.from_numpy(row[num_token_logits:])
    expected = (int(tokens.max(dim=0).indices), int(duration_logits.argmax()))
    assert expected == (int(tokens.argmax()), int(duration_logits.max(dim=0).indices))
    assert decide_from_logits(row, num_token_logits) == expected


def test_decide_from_logits_treats_nan_as_maximum_like_torch():
    """A NaN logit wins in torch (NaN propagates through max) and in our helper alike."""
    row = np.array([0.0, np.nan, 1.0, np.nan, 2.0, np.nan, 0.0], dtype=np.float32)
    tokens, durations = torch.from_numpy(row[:4]), torch.from_numpy(row[4:])
    assert decide_from_logits(row, 4) == (int(tokens.max(dim=0).indices), int(durations.argmax()))


def test_decide_from_logits_takes_a_whole_joint_output():
    """A [1, 1, 1, V+1+K] joint output works as one row."""
    logits = np.array([0.0, 3.0, 1.0, 0.0, 2.0], dtype=np.float32).reshape(1, 1, 1, 5)
    assert decide_from_logits(logits, 3) == (1, 1)


def test_sequential_nemo_merges_near_tied_durations_but_batched_does_not(nemo_greedy):
    """Known NeMo difference: GreedyTDTInfer's log_softmax merges near-tied durations; the batched loop does not."""
    vocab_size, durations = 3, (1, 2)
    row = np.array([5.0, 0.0, 0.0, 0.0, 0.0, 2e-8], dtype=np.float32)  # token 0; duration 2 wins by 2e-8
    scenario = Scenario(np.broadcast_to(row, (4, 9, 6)).copy(), vocab_size, durations, 10)
    assert ours(scenario, BATCHED).durations[0] == 2
    assert_matches_nemo(nemo_greedy, scenario, (BATCHED,))
    (sequential,) = run_nemo(nemo_decoder(nemo_greedy, scenario, "sequential"), [scenario.num_frames])
    assert emissions(sequential)[2][0] == 1
