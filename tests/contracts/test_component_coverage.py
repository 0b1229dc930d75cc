"""Every component is declared whole: contract entry, reference, gate, tolerance rows, plots and parity tests."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from exporters.components import COMPONENTS
from exporters.compression import COMPRESSIBLE, NONE, VARIANTS
from exporters.export import PRECISIONS
from exporters.parity import plots
from exporters.parity.diff import TOLERANCES
from exporters.parity.gates import GATES

PARITY_TESTS = Path(__file__).parents[1] / "parity"


def compared_outputs(component, contract) -> tuple[str, ...]:
    return component.compared_outputs or tuple(spec.name for spec in contract[component.name].outputs)


def test_contract_and_registry_name_the_same_components(tiny_contract):
    assert list(tiny_contract.components) == list(COMPONENTS)


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_is_declared_whole(name, tiny_contract):
    """Coverage: a known gate kind, a reference taking (model, contract), a tolerance row for every compared
    output at every precision, plot makers that exist, and a parity test naming it."""
    component = COMPONENTS[name]
    assert component.gate in GATES
    assert list(inspect.signature(component.reference).parameters)[:2] == ["model", "contract"]
    missing = [(precision, output) for precision in PRECISIONS for output in compared_outputs(component, tiny_contract)
               if (name, precision, output) not in TOLERANCES]
    assert missing == []
    assert all(callable(getattr(plots, maker, None)) for maker in component.plots.values())
    assert set(component.plots) <= set(compared_outputs(component, tiny_contract))
    assert any(f'"{name}"' in path.read_text() for path in PARITY_TESTS.glob("test_*.py")), \
        f"no test in tests/parity names {name!r}"


def compressed_rows(contract) -> set[tuple[str, str, str]]:
    return {(name, variant, output) for name in COMPRESSIBLE for variant in VARIANTS if variant != NONE
            for output in compared_outputs(COMPONENTS[name], contract)}


def test_every_compressible_component_has_rows_for_every_variant(tiny_contract):
    """Coverage: `convert --compress V --compress-components C` is judged by rows that exist."""
    assert sorted(compressed_rows(tiny_contract) - set(TOLERANCES)) == []


def test_no_tolerance_row_for_anything_else(tiny_contract):
    """Coverage: every row of exporters/tolerances.toml belongs to a declared component and compared output,
    at a precision or a compression variant."""
    known = {(name, precision, output) for name, component in COMPONENTS.items() for precision in PRECISIONS
             for output in compared_outputs(component, tiny_contract)}
    assert set(TOLERANCES) - known - compressed_rows(tiny_contract) == set()


def test_unknown_component_is_an_error(tiny_contract):
    with pytest.raises(KeyError, match="no vocoder package"):
        tiny_contract["vocoder"]
