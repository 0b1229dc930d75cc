"""Recurrent: lstm (stacked directions, MIL gate order i, f, o, z) and rnn."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .linalg import SPLIT_MIN_WEIGHT_ELEMENTS, projected
from .registry import _sigmoid, kernel


_LSTM_ACTIVATIONS = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "linear": lambda x: x,
}


def _lstm_activation(name: str):
    if name.lower() not in _LSTM_ACTIVATIONS:
        raise NotImplementedError(f"lstm activation {name!r} is not supported")
    return _LSTM_ACTIVATIONS[name.lower()]


def _product_with(weight) -> Callable[[np.ndarray], np.ndarray]:
    """rows [M, in] -> rows @ weight.T: numpy's for small weights (its call costs less than torch's), the linear
    kernel's for large ones (split by thread: a decode step's one row at full width, SPLIT_MIN_WEIGHT_ELEMENTS)."""
    if np.size(weight) < SPLIT_MIN_WEIGHT_ELEMENTS:
        transposed = np.transpose(weight)
        return lambda rows: np.matmul(rows, transposed)
    tensor = torch.from_numpy(np.ascontiguousarray(weight))
    return lambda rows: projected(torch.from_numpy(np.ascontiguousarray(rows, dtype=weight.dtype)), tensor).numpy()


def _lstm_direction(x, h, c, weight_ih, weight_hh, bias, activations, backward):
    """One LSTM direction over x [T, B, I]; gates are stacked in MIL order i, f, o, z."""
    gate, cell, output = activations
    steps, batch = np.shape(x)[:2]
    inputs = _product_with(weight_ih)(np.reshape(x, (steps * batch, -1))).reshape(steps, batch, -1)
    if bias is not None:
        inputs += bias
    recurrent = _product_with(weight_hh)
    sequence = np.empty((steps, batch, np.shape(weight_hh)[1]), dtype=np.result_type(inputs, h))
    for t in reversed(range(steps)) if backward else range(steps):
        i, f, o, z = np.split(inputs[t] + recurrent(h), 4, axis=-1)
        c = gate(f) * c + gate(i) * cell(z)
        h = gate(o) * output(c)
        sequence[t] = h
    return sequence, h, c


def _state_of_batch(state, batch: int, name: str) -> np.ndarray:
    """An initial state [N, D*H] for x's batch B. MIL's lstm takes states [B, D*H]; coremltools converts a
    packed-sequence LSTM with zero states of N rows (N the longest length), and Core ML runs that program as the
    LSTM from a zero state for every sequence (coremltools' packed-sequence test passes on macOS). So a state of
    another batch whose rows are all equal is that row for each sequence; one whose rows differ has no known
    meaning and is refused."""
    state = np.asarray(state)
    if state.shape[0] == batch:
        return state
    if state.shape[0] == 0 or not np.array_equal(state, np.broadcast_to(state[:1], state.shape)):
        raise ValueError(f"{name} has batch {state.shape[0]} but x has batch {batch}, and its rows are not all "
                         "equal (MIL's lstm takes states of x's batch)")
    return np.broadcast_to(state[:1], (batch, *state.shape[1:]))


@kernel("lstm")
def lstm(
    x,
    initial_h,
    initial_c,
    weight_ih,
    weight_hh,
    bias=None,
    peephole=None,
    weight_ih_back=None,
    weight_hh_back=None,
    bias_back=None,
    peephole_back=None,
    direction="forward",
    output_sequence=False,
    recurrent_activation="sigmoid",
    cell_activation="tanh",
    activation="tanh",
    clip=None,
):
    """MIL lstm: returns (all or last hidden [T|1, B, D*H], h_last [B, D*H], c_last [B, D*H])."""
    if peephole is not None or peephole_back is not None or clip is not None:
        raise NotImplementedError("lstm with peephole or clip is not supported")
    activations = tuple(_lstm_activation(a) for a in (recurrent_activation, cell_activation, activation))
    hidden = np.shape(weight_hh)[1]
    batch = np.shape(x)[1]
    initial_h = _state_of_batch(initial_h, batch, "initial_h")
    initial_c = _state_of_batch(initial_c, batch, "initial_c")
    if direction == "bidirectional":
        forward = _lstm_direction(x, initial_h[:, :hidden], initial_c[:, :hidden], weight_ih, weight_hh, bias,
                                  activations, backward=False)
        backward = _lstm_direction(x, initial_h[:, hidden:], initial_c[:, hidden:], weight_ih_back, weight_hh_back,
                                   bias_back, activations, backward=True)
        sequence, h, c = (np.concatenate(pair, axis=-1) for pair in zip(forward, backward))
    else:
        sequence, h, c = _lstm_direction(x, initial_h, initial_c, weight_ih, weight_hh, bias, activations,
                                         backward=direction == "reverse")
    return (sequence if output_sequence else h[None], h, c)


@kernel("rnn")
def rnn(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        activation="tanh"):
    """MIL rnn, h_t = activation(W_ih x_t + W_hh h_{t-1} + bias): returns (all or last hidden [T|1, B, H],
    h_last [B, H])."""
    act = _lstm_activation(activation)
    steps, batch = np.shape(x)[:2]
    inputs = _product_with(weight_ih)(np.reshape(x, (steps * batch, -1))).reshape(steps, batch, -1)
    if bias is not None:
        inputs += bias
    recurrent = _product_with(weight_hh)
    h = np.asarray(initial_h)
    sequence = np.empty((steps, batch, np.shape(weight_hh)[0]), dtype=np.result_type(inputs, h))
    for t in reversed(range(steps)) if direction == "reverse" else range(steps):
        h = act(inputs[t] + recurrent(h))
        sequence[t] = h
    return (sequence if output_sequence else h[None], h)
