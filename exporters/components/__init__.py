"""One module per exported component: a torch wrapper with the contract's I/O, plus export settings.

`COMPONENTS` is the registry the exporter, the reference backend and the tests iterate over.
"""

from __future__ import annotations

from exporters.components.base import Component
from exporters.components.decode_step import DECODE_STEP
from exporters.components.decoder import DECODER
from exporters.components.encoder import ENCODER
from exporters.components.joint import JOINT
from exporters.components.joint_decision import JOINT_DECISION, JOINT_DECISION_SINGLE_STEP
from exporters.components.mel_encoder import MEL_ENCODER
from exporters.components.preprocessor import PREPROCESSOR

COMPONENTS: dict[str, Component] = {
    component.name: component
    for component in (PREPROCESSOR, ENCODER, DECODER, JOINT, MEL_ENCODER, JOINT_DECISION,
                      JOINT_DECISION_SINGLE_STEP, DECODE_STEP)
}

__all__ = ["COMPONENTS", "Component"]
