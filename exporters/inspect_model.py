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
    greedy_semantics: str  # "batched"/"batched_keeps_end" (NeMo greedy_batch, see batched_semantics) or "sequential"

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
        return batched_semantics()
    if isinstance(greedy, GreedyTDTInfer):
        return "sequential"
    raise ValueError(f"not a greedy TDT decoder: {type(greedy).__name__}; set decoding.strategy to greedy_batch")


def batched_semantics() -> str:
    """The installed NeMo's greedy_batch end-of-utterance rule: up to 2.x its loop drops a token whose
    jump ends the utterance ("batched"); NeMo 3.0 keeps it ("batched_keeps_end"). The decoding tests
    check this against NeMo's own GreedyBatchedTDTInfer on scripted joints."""
    return "batched" if nemo_major_version() < 3 else "batched_keeps_end"


def nemo_major_version() -> int:
    """The installed NeMo's major version, for the few rules that changed between 2.x and 3.0."""
    import nemo

    return int(nemo.__version__.split(".")[0])


def mel_frames(model, samples: int) -> int:
    """Width of NeMo's preprocessor output for `samples` of audio (its STFT frames).

    Read off a run, not off `get_seq_len`: from NeMo 3.0 the valid length it reports is one frame shorter
    than the tensor it emits (1500 valid of 1501 for 15 s), so the length rule is not the width.
    """
    import torch

    with torch.no_grad():
        mel, _ = model.preprocessor(input_signal=torch.zeros(1, samples), length=torch.tensor([samples]))
    return int(mel.shape[-1])


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
