"""Pure-numpy executor for saved Core ML ML-program packages (.mlpackage), for Linux."""

from .executor import InvalidProgramError, MilExecutor, OpExecutionError, Trace, TraceEntry
from .ops import KERNELS
from .program import UnsupportedOpError, WeightFileError

__all__ = [
    "InvalidProgramError",
    "KERNELS",
    "MilExecutor",
    "OpExecutionError",
    "Trace",
    "TraceEntry",
    "UnsupportedOpError",
    "WeightFileError",
]
