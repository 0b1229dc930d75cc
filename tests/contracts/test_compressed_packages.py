"""Compressed exports keep the contract and say what they are: the same inputs and outputs, the deployment
target each package needs (iOS18 only for block-wise int4), and the compression in metadata.json."""

from __future__ import annotations

import coremltools as ct
import pytest

from exporters.compression import NONE, VARIANTS
from exporters.metadata import read_metadata
from exporters.runtime import package_io

FIXED = [name for name in VARIANTS if name not in (NONE, "mixed")]
ENCODERS = ("encoder", "mel_encoder")


@pytest.mark.parametrize("variant", FIXED)
def test_compressed_packages_keep_the_contract_and_record_the_compression(load_subject, variant):
    tiny = load_subject("tiny")
    packages = tiny.compressed("fp16", variant, ENCODERS)
    metadata = read_metadata(packages)
    assert metadata["compression"]["variant"]["name"] == variant
    assert metadata["compression"]["variant"]["options"] == VARIANTS[variant].options
    target = VARIANTS[variant].minimum_target
    for name in ENCODERS:
        component = tiny.contract[name]
        inputs, outputs = package_io(packages / component.package_name)
        assert [d.interface for d in inputs] == [s.interface for s in component.inputs]
        assert [d.interface for d in outputs] == [s.interface for s in component.outputs]
        entry = metadata["packages"][name]
        assert (entry["compression"], entry["deployment_target"]) == (variant, target)
        spec = ct.utils.load_spec(str(packages / component.package_name))
        assert spec.specificationVersion == ct.target[target].value
