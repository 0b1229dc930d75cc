"""Host-side decoding loops driving exported decoder/joint packages."""

from exporters.decoding.tdt import TdtHypothesis, decide_from_logits, greedy_tdt_decode

__all__ = ["TdtHypothesis", "decide_from_logits", "greedy_tdt_decode"]
