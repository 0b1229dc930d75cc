"""Read a loaded NeMo TDT model into the few numbers every exporter and test needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Dimensions and decoding constants of a Parakeet-TDT model, as inspected (never assumed)."""

    sample_rate: int
    n_mels: int
    n_fft: int
    win_length: int
    hop_length: int
    subsampling_factor: int
    d_model: int
    pred_hidden: int
    pred_layers: int
    joint_hidden: int
    vocab_size: int  # V: tokenizer pieces, blank excluded
    blank_id: int  # V
    durations: tuple[int, ...]
    max_symbols_per_step: int | None
    greedy_semantics: str  # "batched" (NeMo greedy_batch) or "sequential" (NeMo greedy)

    @property
    def num_token_logits(self) -> int:
        """V + 1: every token plus blank."""
        return self.vocab_size + 1

    @property
    def num_joint_outputs(self) -> int:
        """V + 1 token logits followed by one logit per duration."""
        return self.num_token_logits + len(self.durations)

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_model(model) -> ModelSpec:
    """Inspect a NeMo EncDecRNNTModel with TDT decoding."""
    featurizer = model.preprocessor.featurizer
    greedy = model.decoding.decoding
    durations = tuple(int(d) for d in getattr(greedy, "durations", None) or model.cfg.decoding.durations)
    return ModelSpec(
        sample_rate=int(model.preprocessor._sample_rate),
        n_mels=int(featurizer.nfilt),
        n_fft=int(featurizer.n_fft),
        win_length=int(featurizer.win_length),
        hop_length=int(featurizer.hop_length),
        subsampling_factor=int(model.encoder.subsampling_factor),
        d_model=int(model.encoder.d_model),
        pred_hidden=int(model.decoder.pred_hidden),
        pred_layers=int(model.decoder.pred_rnn_layers),
        joint_hidden=int(model.joint.joint_hidden),
        # NeMo's TDT joint counts its duration outputs inside num_classes_with_blank.
        vocab_size=int(model.joint.num_classes_with_blank - 1 - model.joint.num_extra_outputs),
        blank_id=int(model.decoder.blank_idx),
        durations=durations,
        max_symbols_per_step=getattr(greedy, "max_symbols", None),
        greedy_semantics=greedy_semantics(greedy),
    )


def greedy_semantics(greedy) -> str:
    """Which of NeMo's greedy TDT loops the model decodes with (their corner cases differ)."""
    from nemo.collections.asr.parts.submodules.rnnt_greedy_decoding import GreedyBatchedTDTInfer, GreedyTDTInfer

    if isinstance(greedy, GreedyBatchedTDTInfer):
        return "batched"
    if isinstance(greedy, GreedyTDTInfer):
        return "sequential"
    raise ValueError(f"not a greedy TDT decoder: {type(greedy).__name__}; set decoding.strategy to greedy_batch")


def mel_frames(model, samples: int) -> int:
    """Mel frames for `samples` of audio, by NeMo's own featurizer length rule (center=True)."""
    import torch

    return int(model.preprocessor.featurizer.get_seq_len(torch.tensor([samples]))[0])


def encoder_frames(model, frames: int) -> int:
    """Encoder frames for `frames` mel frames, by NeMo's own subsampling length rule."""
    import torch

    return int(subsampled_lengths(model.encoder.pre_encode, torch.tensor([frames]))[0])


def subsampled_lengths(pre_encode, lengths):
    """NeMo's subsampling length rule (calc_length with the module's own geometry) on a lengths tensor."""
    from nemo.collections.asr.parts.submodules.subsampling import calc_length

    return calc_length(lengths, all_paddings=pre_encode._left_padding + pre_encode._right_padding,
                       kernel_size=pre_encode._kernel_size, stride=pre_encode._stride,
                       ceil_mode=pre_encode._ceil_mode, repeat_num=pre_encode._sampling_num)
