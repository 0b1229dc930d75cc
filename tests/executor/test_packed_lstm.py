"""LSTMs over packed sequences (pack_padded_sequence -> lstm -> pad_packed_sequence), as coremltools converts
them: one LSTM over the padded batch, its zero initial states sized by the longest length rather than the batch
when the two differ. Core ML runs that program (coremltools' TestLSTMWithPackedSequence passes on macOS, lengths
10, 5, 1 in a batch of 3), so the executor runs it too: a state of another batch whose rows are all equal is
that row for every sequence. A state of another batch with differing rows has no known meaning: refused."""

from __future__ import annotations

from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from exporters.runtime.mil import KERNELS, MilExecutor

PRECISIONS = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}
FEATURES, HIDDEN = 12, 16


class PackedLstm(torch.nn.Module):
    """A stacked bidirectional LSTM over a batch of sequences of fixed lengths (longest first)."""

    def __init__(self, lengths: list[int]):
        super().__init__()
        self.lstm = torch.nn.LSTM(FEATURES, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
        self.register_buffer("lengths", torch.tensor(lengths))

    def forward(self, x):
        out, (h, c) = self.lstm(pack_padded_sequence(x, self.lengths, batch_first=True))
        padded, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return padded, h, c


def convert(lengths: list[int], steps: int, precision: str, path: Path) -> tuple[PackedLstm, torch.Tensor]:
    """Trace, convert and save a PackedLstm over [len(lengths), steps, FEATURES]; return it and an input."""
    torch.manual_seed(0)
    module = PackedLstm(lengths).eval()
    x = torch.randn(len(lengths), steps, FEATURES)
    model = ct.convert(torch.jit.trace(module, (x,)), inputs=[ct.TensorType(name="x", shape=tuple(x.shape))],
                       outputs=[ct.TensorType(name=name) for name in ("y", "h", "c")], convert_to="mlprogram",
                       minimum_deployment_target=ct.target.iOS17, compute_precision=PRECISIONS[precision])
    model.save(str(path))
    return module, x


def converted_semantics(module: PackedLstm, x: torch.Tensor) -> dict[str, np.ndarray]:
    """What coremltools' conversion computes: the LSTM over the whole padded batch (the lengths do not reach
    the recurrence, so the final states and the backward direction are the padded run's), outputs zeroed
    past each sequence's length."""
    with torch.no_grad():
        sequence, (h, c) = module.lstm(x)
    valid = torch.arange(x.shape[1])[None, :] < module.lengths[:, None]
    return {"y": (sequence * valid[..., None]).numpy(), "h": h.numpy(), "c": c.numpy()}


def test_packed_sequence_lstm_runs_as_converted(tmp_path, precision):
    """Coverage: lengths 4, 3, 3, 1 in a batch of 4 (the case coremltools converts into a valid program):
    outputs and final states equal the converted program's meaning (fp32 within 1e-5, fp16 within fp16
    error)."""
    path = tmp_path / "packed.mlpackage"
    module, x = convert([4, 3, 3, 1], 4, precision, path)
    outputs = MilExecutor(path).predict({"x": x.numpy()})
    for name, expected in converted_semantics(module, x).items():
        atol = 1e-5 if precision == "fp32" else 2e-2 * max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(outputs[name], expected, atol=atol, rtol=0, err_msg=name)


def test_packed_lstm_with_states_of_another_batch_runs_as_converted(tmp_path, precision):
    """Regression (was refused at load): lengths 5, 3, 1 in a batch of 3, where coremltools sizes the zero
    initial states by the longest length (5 rows), not the batch (3): outputs and final states are the converted
    program's meaning, the LSTM from a zero state for each sequence."""
    path = tmp_path / "packed.mlpackage"
    module, x = convert([5, 3, 1], 5, precision, path)
    outputs = MilExecutor(path).predict({"x": x.numpy()})
    for name, expected in converted_semantics(module, x).items():
        atol = 1e-5 if precision == "fp32" else 2e-2 * max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(outputs[name], expected, atol=atol, rtol=0, err_msg=name)


class LengthsAsInput(torch.nn.Module):
    """coremltools' TestLSTMWithPackedSequence model: the lengths are a model input, so the converted program
    fills its zero states at run time with as many rows as the longest length."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 6, batch_first=True)

    def forward(self, x, lengths):
        out, _ = self.lstm(pack_padded_sequence(x, lengths, batch_first=True))
        return pad_packed_sequence(out, padding_value=-1.0, batch_first=True)[0]


def test_packed_lstm_with_lengths_as_input_matches_torch(tmp_path, precision):
    """Regression (failed mid-run, "operands could not be broadcast"): lengths 10, 5, 1 fed at run time to a
    batch of 3 (states of 10 rows): the output equals torch's packed LSTM, padded with -1."""
    torch.manual_seed(0)
    module = LengthsAsInput().eval()
    x, lengths = torch.randn(3, 10, 4), torch.tensor([10, 5, 1], dtype=torch.int32)
    model = ct.convert(torch.jit.trace(module, (x, lengths)),
                       inputs=[ct.TensorType(name="x", shape=x.shape), ct.TensorType(name="lengths", shape=(3,),
                                                                                       dtype=np.int32)],
                       outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
                       compute_precision=PRECISIONS[precision])
    model.save(str(tmp_path / "lengths.mlpackage"))
    output = MilExecutor(tmp_path / "lengths.mlpackage").predict({"x": x.numpy(), "lengths": lengths.numpy()})["y"]
    with torch.no_grad():
        expected = module(x, lengths).numpy()
    np.testing.assert_allclose(output, expected, atol=1e-5 if precision == "fp32" else 1e-2, rtol=0)


def mil_weights(lstm: torch.nn.LSTM) -> dict[str, np.ndarray]:
    """The lstm kernel's weights of a one-layer torch LSTM: gates i, f, g, o reordered to i, f, o, g."""

    def ifog(tensor):
        i, f, g, o = tensor.detach().numpy().reshape(4, -1, *tensor.shape[1:])
        return np.concatenate([i, f, o, g])

    return {"weight_ih": ifog(lstm.weight_ih_l0), "weight_hh": ifog(lstm.weight_hh_l0),
            "bias": ifog(lstm.bias_ih_l0 + lstm.bias_hh_l0)}


def lstm_layer_and_input(batch: int) -> tuple[torch.nn.LSTM, np.ndarray]:
    torch.manual_seed(1)
    return torch.nn.LSTM(3, 5).eval(), np.random.default_rng(1).standard_normal((4, batch, 3)).astype(np.float32)


def test_lstm_state_of_another_batch_with_equal_rows_is_that_row_for_each_sequence():
    """The lstm kernel given states of 7 equal (non-zero) rows for x of batch 2: torch's LSTM from that row
    for both sequences."""
    lstm, x = lstm_layer_and_input(batch=2)
    row_h, row_c = np.full((1, 5), 0.3, np.float32), np.full((1, 5), -0.2, np.float32)
    sequence, h, c = KERNELS["lstm"](x=x, initial_h=np.repeat(row_h, 7, 0), initial_c=np.repeat(row_c, 7, 0),
                                     output_sequence=True, **mil_weights(lstm))
    with torch.no_grad():
        states = tuple(torch.from_numpy(np.repeat(row, 2, 0))[None] for row in (row_h, row_c))
        expected, (eh, ec) = lstm(torch.from_numpy(x), states)
    for actual, wanted in ((sequence, expected), (h, eh[0]), (c, ec[0])):
        np.testing.assert_allclose(actual, wanted.numpy(), atol=1e-6, rtol=0)


def test_lstm_state_of_another_batch_with_differing_rows_is_refused():
    """States of 3 rows that differ, for x of batch 2: which rows Core ML would read is not known, so the
    kernel raises (the executor reports it as a RuntimeError naming the op)."""
    lstm, x = lstm_layer_and_input(batch=2)
    state = np.arange(15, dtype=np.float32).reshape(3, 5) / 15
    with pytest.raises(ValueError, match=r"initial_h has batch 3 but x has batch 2"):
        KERNELS["lstm"](x=x, initial_h=state, initial_c=np.zeros_like(state), **mil_weights(lstm))
