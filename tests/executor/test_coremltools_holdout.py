"""Programs that coremltools' own torch-op tests, run through the executor (scripts/executor_holdout.py), found
handled unlike Core ML: a stack that Core ML refuses at load, rank-0 outputs, and a torch fp16 linear."""

from __future__ import annotations

from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch

from exporters.runtime.mil import InvalidProgramError, MilExecutor

PRECISIONS = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}


class Stack(torch.nn.Module):
    def forward(self, a, b, flexible):
        return torch.stack([a, b, flexible], dim=1)


def convert_stack(default: int, precision: str, path: Path) -> Path:
    """Stack of two [2, 3, 4] inputs and one [2, 3, RangeDim(1..10, default)] input (coremltools'
    test_stack_dynamic_range_dim)."""
    x = torch.rand(2, 3, 4)
    flexible = ct.TensorType(name="flexible", shape=(2, 3, ct.RangeDim(1, 10, default=default)))
    model = ct.convert(torch.jit.trace(Stack().eval(), (x, x, x)),
                       inputs=[ct.TensorType(name="a", shape=x.shape), ct.TensorType(name="b", shape=x.shape),
                               flexible],
                       outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
                       compute_precision=PRECISIONS[precision])
    model.save(str(path))
    return path


def test_stack_of_an_input_whose_default_size_differs_is_refused_at_load(tmp_path, precision):
    """Regression (ran, giving a result): Core ML checks a program with each flexible input at its default shape
    and refuses this stack of [2, 3, 4] and [2, 3, 2] values (coremltools' test expects a RuntimeError), whatever
    the inputs of later predictions; the executor refuses it when it loads, naming the stack. In fp16 the input
    reaches the stack through a cast."""
    path = convert_stack(2, precision, tmp_path / "stack.mlpackage")
    with pytest.raises(InvalidProgramError, match=r"\(stack\).*\[2, 3, 4\] and \[2, 3, 2\]") as refused:
        MilExecutor(path)
    assert isinstance(refused.value, RuntimeError)


def test_stack_of_an_input_at_its_default_size_matches_torch(tmp_path, precision):
    """Coverage: the same program with the flexible input's default 4 loads, and stacks as torch does."""
    executor = MilExecutor(convert_stack(4, precision, tmp_path / "stack.mlpackage"))
    a, b, c = (np.random.default_rng(seed).standard_normal((2, 3, 4)).astype(np.float32) for seed in range(3))
    expected = torch.stack([torch.from_numpy(v) for v in (a, b, c)], dim=1).numpy()
    output = executor.predict({"a": a, "b": b, "flexible": c})["y"]
    np.testing.assert_allclose(output, expected, atol=0, rtol=0 if precision == "fp32" else 1e-3)


class Maximum(torch.nn.Module):
    def forward(self, x):
        return torch.max(x)


def test_rank0_output_is_returned_with_shape_1(tmp_path):
    """Regression (returned shape ()): Core ML has no scalar outputs and returns a rank-0 result as shape [1]
    (coremltools' compare_shapes allows only that difference from torch's ()); so does the executor."""
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    model = ct.convert(torch.jit.trace(Maximum().eval(), (torch.from_numpy(x),)),
                       inputs=[ct.TensorType(name="x", shape=x.shape)], outputs=[ct.TensorType(name="y")],
                       convert_to="mlprogram", compute_precision=ct.precision.FLOAT32)
    model.save(str(tmp_path / "max.mlpackage"))
    output = MilExecutor(tmp_path / "max.mlpackage").predict({"x": x})["y"]
    assert output.shape == (1,)
    assert output[0] == torch.max(torch.from_numpy(x)).item()


def test_fp16_torch_linear_at_fp32_precision_computes_in_fp32(tmp_path):
    """Coverage (coremltools' test_linear_fp16 at fp32 fails here and, by the same program, on Core ML): a torch
    fp16 Linear converted at fp32 precision is cast(fp16 -> fp32), linear with the fp16 weights widened, an fp32
    output. The executor returns torch's fp32 linear of the fp16 values, not torch's fp16-rounded result."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4, dtype=torch.float16).eval()
    x = torch.randn(4, 4, dtype=torch.float16)
    model = ct.convert(torch.jit.trace(layer, (x,)), inputs=[ct.TensorType(name="x", shape=x.shape, dtype=np.float16)],
                       outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
                       compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16)
    model.save(str(tmp_path / "linear.mlpackage"))
    output = MilExecutor(tmp_path / "linear.mlpackage").predict({"x": x.float().numpy()})["y"]
    with torch.no_grad():
        expected = torch.nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float()).numpy()
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, expected, atol=1e-6, rtol=0)
