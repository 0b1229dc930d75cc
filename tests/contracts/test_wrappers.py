"""The torch wrappers equal the NeMo modules they wrap, so a later parity failure points at conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporters.components.preprocessor import exact_dft_basis
from exporters.contract import DEFAULT_TOP_K, build_contract
from exporters.example_inputs import example_inputs
from exporters.parity.diff import assert_passed, compare
from exporters.parity.gates import valid_encoder_frames
from exporters.reference import nemo_front_end_conditioning, nemo_mel_scale, nemo_runtime, wrapper_runtime

EXACT = dict(rtol=0, atol=0)


def run_wrapper(model, contract, name, inputs):
    return wrapper_runtime(model, contract, name).predict(inputs)


def test_preprocessor_wrapper_equals_nemo_on_the_file(tiny_model, tiny_contract):
    """Coverage: PreprocessorWrapper (exact-basis conv STFT, true-end reflection) on a window with a noisy
    tail vs NeMo's torch.stft preprocessor on the unpadded file, fp32 gate."""
    inputs = example_inputs(tiny_contract["preprocessor"], seed=1)
    inputs["audio_length"][:] = 123457
    ours = run_wrapper(tiny_model, tiny_contract, "preprocessor", inputs)
    expected = nemo_runtime(tiny_model, tiny_contract, "preprocessor").predict(inputs)
    scale = nemo_mel_scale(tiny_model, inputs["audio_signal"], inputs["audio_length"])
    assert_passed([compare("preprocessor", "mel", "fp32", "wrapper", expected["mel"], ours["mel"], scale=scale)])
    assert ours["mel_length"].tolist() == expected["mel_length"].tolist()


def test_mel_encoder_wrapper_equals_nemo_forward_on_the_file(tiny_model, tiny_contract):
    """Coverage: MelEncoderWrapper on a window with a noisy tail vs the NeMo model's own forward
    (preprocessor + encoder) on the unpadded file, valid frames."""
    inputs = example_inputs(tiny_contract["mel_encoder"], seed=2)
    inputs["audio_length"][:] = 54321
    ours = run_wrapper(tiny_model, tiny_contract, "mel_encoder", inputs)
    expected = nemo_runtime(tiny_model, tiny_contract, "mel_encoder").predict(inputs)
    valid_encoder_frames(expected, ours)
    scale = nemo_front_end_conditioning(tiny_model, inputs["audio_signal"], inputs["audio_length"])
    assert_passed([compare("mel_encoder", "encoder", "fp32", "wrapper", expected["encoder"], ours["encoder"],
                           scale=scale)])
    assert ours["encoder_length"].tolist() == expected["encoder_length"].tolist()


def test_decoder_wrapper_chained_equals_nemo_sequence(tiny_model, tiny_contract):
    """Coverage: U=1 steps with h/c fed back equal NeMo's prediction network over the whole sequence."""
    spec = tiny_contract.model
    tokens = np.random.default_rng(3).integers(0, spec.vocab_size, size=12)
    decoder = wrapper_runtime(tiny_model, tiny_contract, "decoder")
    state_shape = tiny_contract["decoder"].input("h_in").shape
    h = np.zeros(state_shape, np.float32)
    c = np.zeros(state_shape, np.float32)
    steps = []
    for token in tokens:
        out = decoder.predict(tiny_contract["decoder"].decoder_feed(token, h, c))
        h, c = out["h_out"], out["c_out"]
        steps.append(out["decoder"][0, :, 0])
    with torch.no_grad():
        g, (h_ref, c_ref) = tiny_model.decoder.predict(torch.from_numpy(tokens[None]).long(), state=None,
                                                       add_sos=False)
    np.testing.assert_allclose(np.stack(steps), g[0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h, h_ref.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c, c_ref.numpy(), rtol=1e-6, atol=1e-6)


def test_decoder_wrapper_blank_from_zero_state_is_decoding_start(tiny_model, tiny_contract):
    """Coverage: blank with zero state equals NeMo's start-of-decoding predict(None, state=None)."""
    spec = tiny_contract.model
    state_shape = tiny_contract["decoder"].input("h_in").shape
    zeros = np.zeros(state_shape, np.float32)
    out = run_wrapper(tiny_model, tiny_contract, "decoder",
                      tiny_contract["decoder"].decoder_feed(spec.blank_id, zeros, zeros))
    with torch.no_grad():
        g, (h_ref, c_ref) = tiny_model.decoder.predict(None, state=None, add_sos=False, batch_size=1)
    np.testing.assert_allclose(out["decoder"][0, :, 0], g[0, 0].numpy(), **EXACT)
    np.testing.assert_allclose(out["h_out"], h_ref.numpy(), **EXACT)
    np.testing.assert_allclose(out["c_out"], c_ref.numpy(), **EXACT)


def nemo_joint_log_probs(model, encoder: np.ndarray, decoder: np.ndarray) -> np.ndarray:
    """NeMo's joint forward (on CPU it log-softmaxes over all outputs)."""
    with torch.no_grad():
        return model.joint(encoder_outputs=torch.from_numpy(encoder),
                           decoder_outputs=torch.from_numpy(decoder)).numpy()


@pytest.fixture
def joint_inputs(tiny_contract):
    return example_inputs(tiny_contract["joint"], seed=4)


def test_joint_wrapper_is_nemo_joint_before_normalization(tiny_model, tiny_contract, joint_inputs):
    """Coverage: raw logits' log-softmax equals NeMo's joint forward on the same (T, U) grid."""
    logits = run_wrapper(tiny_model, tiny_contract, "joint", joint_inputs)["logits"]
    reference = nemo_joint_log_probs(tiny_model, joint_inputs["encoder"], joint_inputs["decoder"])
    log_probs = torch.from_numpy(logits).log_softmax(-1).numpy()
    np.testing.assert_allclose(log_probs, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["joint_decision", "joint_decision_single_step"])
@pytest.mark.parametrize("top_k", [1, 3, DEFAULT_TOP_K])
def test_joint_decision_wrapper_matches_nemo_argmax(tiny_model, tiny_contract, name, top_k):
    """Coverage: token_id/duration are NeMo's argmaxes over V+1 and durations; token_prob its softmax; the
    contract's K top logits are NeMo's K largest token scores (compared relative to the best, as NeMo
    log-softmaxes), at the ids returned."""
    spec = tiny_contract.model
    contract = build_contract(spec, tiny_contract.mel_frames, tiny_contract.encoder_frames, top_k=top_k)
    inputs = example_inputs(contract[name], seed=5)
    encoder, decoder = (inputs[s.name] for s in contract[name].inputs[:2])
    ours = run_wrapper(tiny_model, contract, name, inputs)
    reference = nemo_joint_log_probs(tiny_model, encoder, decoder)
    token_scores = reference[..., : spec.num_token_logits]
    duration_scores = reference[..., spec.num_token_logits:]
    np.testing.assert_array_equal(ours["token_id"], token_scores.argmax(-1))
    np.testing.assert_array_equal(ours["duration"], duration_scores.argmax(-1))
    token_probs = torch.from_numpy(token_scores).softmax(-1).numpy()
    expected_prob = np.take_along_axis(token_probs, ours["token_id"][..., None].astype(np.int64), -1)[..., 0]
    np.testing.assert_allclose(ours["token_prob"], expected_prob, rtol=1e-5, atol=1e-6)
    assert ours["top_k_ids"].shape == ours["top_k_logits"].shape == (*ours["token_id"].shape, top_k)
    best_k = -np.sort(-token_scores, axis=-1)[..., :top_k]
    at_ids = np.take_along_axis(token_scores, ours["top_k_ids"].astype(np.int64), -1)
    np.testing.assert_allclose(at_ids, best_k, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours["top_k_logits"] - ours["top_k_logits"][..., :1], best_k - best_k[..., :1],
                               rtol=0, atol=1e-5)


def test_exact_dft_basis_beats_fp32_angles(tiny_model):
    """Coverage: the export's DFT basis is closer to float64 than cos/sin of fp32 angles (coremltools' lowering)."""
    featurizer = tiny_model.preprocessor.featurizer
    n_fft = featurizer.n_fft
    real, _ = exact_dft_basis(n_fft, featurizer.window)
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    angle64 = 2 * np.pi * k * n / n_fft
    angle32 = (k * n).astype(np.float32) * np.float32(2 * np.pi) / np.float32(n_fft)
    truth = np.cos(angle64)
    window = real.double().numpy()
    support = np.abs(window[0]) > 0  # row k=0 is the window itself
    exact_error = np.abs(window[:, support] / window[0, support] - truth[:, support]).max()
    fp32_error = np.abs(np.cos(angle32.astype(np.float64)) - truth).max()
    assert exact_error < 1e-6 < fp32_error


@pytest.fixture
def positional_table_at_its_initial_size(tiny_model):
    """The tiny encoder with NeMo's positional encodings as built at init (pos_emb_max_len mel frames), as in a
    fresh process; the session's table (perhaps grown by earlier tests) is put back after."""
    encoder = tiny_model.encoder
    positional, saved = encoder.pos_enc, (encoder.pos_enc.pe, encoder.max_audio_length)
    del positional.pe
    encoder.set_max_audio_length(encoder.pos_emb_max_len)
    try:
        yield encoder
    finally:
        positional.pe, encoder.max_audio_length = saved


@pytest.mark.parametrize("name", ["encoder", "mel_encoder"])
def test_a_window_beyond_the_positional_table_traces_without_rebuilding_it(tiny_model,
                                                                          positional_table_at_its_initial_size, name):
    """Coverage: for a 65 s window (6501 mel frames, more than pos_emb_max_len = 5000), the traced encoder only
    slices NeMo's positional encodings: no sine or cosine in the graph (NeMo would otherwise grow the table inside
    the traced forward, and the package would rebuild it, a scatter over [2M - 1, D], on every call)."""
    from exporters.contract import contract_for_model
    from exporters.export import trace

    encoder = positional_table_at_its_initial_size
    contract = contract_for_model(tiny_model, (65.0,))
    assert contract.mel_frames > encoder.pos_emb_max_len
    graph = str(trace(tiny_model, contract, name).inlined_graph)
    assert "aten::sin" not in graph and "aten::cos" not in graph
    assert encoder.pos_enc.pe.shape[1] >= 2 * contract.mel_frames - 1
