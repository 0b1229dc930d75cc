"""LSTMs over packed sequences (pack_padded_sequence -> lstm -> pad_packed_sequence), as coremltools converts
them: the executor runs what the program says, and refuses at load the program coremltools emits when the
longest length is not the batch size (its states then have the wrong batch)."""

from __future__ import annotations

from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from exporters.runtime.mil import InvalidProgramError, MilExecutor

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


def test_packed_lstm_with_states_of_another_batch_is_refused_at_load(tmp_path):
    """Coverage: lengths 5, 3, 1 in a batch of 3: coremltools sizes the initial states by the longest length
    (5), not the batch (3). That program breaks the lstm op's contract; the executor refuses it when it
    loads, with a RuntimeError naming the op, instead of failing mid-run."""
    path = tmp_path / "packed.mlpackage"
    convert([5, 3, 1], 5, "fp32", path)
    with pytest.raises(InvalidProgramError, match=r"lstm.*initial_h.*batch") as refused:
        MilExecutor(path)
    assert isinstance(refused.value, RuntimeError)
