"""NeMo itself as the reference side of every comparison, behind the runtime interface (`TorchRuntime`;
`wrapper_runtime` puts our own torch wrappers, what gets traced, behind it too).

Each component's module declares its reference: the NeMo modules called directly (not our wrappers),
in the contract's layout, so the same test code can run a package and NeMo on identical inputs.

The reference is NeMo on the user's file: inputs that carry a length (audio, mel) are trimmed to
their valid prefix before NeMo sees them, as NeMo's transcribe() runs one file alone (batch of 1),
and outputs are zero-padded back to the window's frames. Frames past the valid length are NeMo's
pad value (0) for mel and unspecified for encoder output, so gates compare encoder frames up to
encoder_length only.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from typing import Callable

import numpy as np
import torch

from exporters.components import COMPONENTS
from exporters.components.preprocessor import nemo_feature_stats
from exporters.contract import Contract
from exporters.runtime import with_defaults
from exporters.tensors import TensorSpec


class TorchRuntime:
    """A torch callable given the contract's inputs in order, returning its outputs in order."""

    backend = "torch"

    def __init__(self, function: Callable, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]):
        self.function = function
        self.inputs = inputs
        self.outputs = outputs

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = with_defaults(inputs, self.inputs)
        arguments = [torch.from_numpy(np.ascontiguousarray(inputs[d.name])) for d in self.inputs]
        with torch.no_grad():
            results = self.function(*arguments)
        results = results if isinstance(results, (tuple, list)) else (results,)
        return {d.name: r.detach().cpu().numpy().astype(d.numpy_dtype, copy=False)
                for d, r in zip(self.outputs, results)}


def wrapper_runtime(model, contract, name: str) -> TorchRuntime:
    """The component's torch wrapper (what gets traced), behind the runtime interface."""
    component = contract[name]
    module = COMPONENTS[name].wrap(model, contract).eval()
    return TorchRuntime(module, component.inputs, component.outputs)


def nemo_mel_scale(model, audio_signal: np.ndarray, audio_length: np.ndarray) -> np.ndarray:
    """NeMo's per-feature normalization divisor (std over valid frames + 1e-5) on the file, [1, n_mels, 1]."""
    return nemo_feature_stats(model, torch.from_numpy(audio_signal), torch.from_numpy(audio_length))[1].numpy()


# Below this per-feature std (log-mel units) the normalized features are near-constant: silence-level
# input, where float rounding in the STFT is magnified by 1 / std (see tolerances.toml, mel_encoder).
CONDITIONED_STD = 0.1


def nemo_front_end_conditioning(model, audio_signal: np.ndarray, audio_length: np.ndarray) -> np.ndarray:
    """min(1, smallest normalization divisor / CONDITIONED_STD) on the file: 1 for speech, smaller where
    per-feature normalization divides by a near-zero std."""
    std = nemo_mel_scale(model, audio_signal, audio_length)
    return np.minimum(1.0, np.nanmin(std) / CONDITIONED_STD).reshape(1, 1, 1)


@contextlib.contextmanager
def nemo_token_bias(model, token_bias: np.ndarray):
    """NeMo's own decoding with `token_bias` added to the V + 1 token logits of every joint call: what a
    language lock does to the packages, applied to NeMo (its greedy loops all call joint_after_projection;
    a log-softmax there shifts every logit of a row alike, so the choices match biasing raw logits)."""
    joint = model.joint
    original = joint.joint_after_projection
    bias = torch.from_numpy(np.asarray(token_bias, np.float32))

    def biased(f, g):
        out = original(f, g)
        return torch.cat([out[..., :bias.numel()] + bias, out[..., bias.numel():]], dim=-1)

    joint.joint_after_projection = biased
    try:
        yield model
    finally:
        del joint.joint_after_projection


@contextlib.contextmanager
def nemo_fusion(model, fusion):
    """NeMo's own greedy decoding with the same custom vocabulary (`exporters.decoding.fusion.Fusion`: its boosting
    tree and n-gram LM options in decoding.greedy), put back as it was afterwards; None changes nothing."""
    import copy

    from omegaconf import open_dict

    if fusion is None:
        yield model
        return
    original = copy.deepcopy(model.cfg.decoding)
    fused = copy.deepcopy(original)
    with open_dict(fused):
        for key, value in fusion.nemo_greedy_options().items():
            fused.greedy[key] = value
    model.change_decoding_strategy(fused, verbose=False)
    try:
        yield model
    finally:
        model.change_decoding_strategy(original, verbose=False)


def nemo_streaming(model, samples: np.ndarray, left_seconds: float, chunk_seconds: float, right_seconds: float,
                   fusion=None):
    """NeMo 3.0's buffered streaming inference for TDT on one file alone (the algorithm of NeMo's
    examples/asr/asr_chunked_inference/rnnt/speech_to_text_streaming_infer_rnnt.py, batch of 1), from NeMo's own
    classes: ContextSize and StreamingBatchedAudioBuffer hold the [left, chunk, right] buffer, the model's forward
    encodes each buffer (its features normalized over the buffer), and the label-looping decoding computer decodes
    the chunk's frames with its state carried (with `fusion`'s boosting tree and LM in decoding.greedy, as the
    script's decoding config takes them). Returns NeMo's Hypothesis (tokens, frames, durations, text)."""
    import copy

    from nemo.collections.asr.parts.utils.rnnt_utils import batched_hyps_to_hypotheses
    from nemo.collections.asr.parts.utils.streaming_utils import ContextSize, StreamingBatchedAudioBuffer
    from omegaconf import open_dict

    context = streaming_context(model, left_seconds, chunk_seconds, right_seconds)
    frame_samples = encoder_frame_samples(model)
    original = copy.deepcopy(model.cfg.decoding)
    decoding = copy.deepcopy(original)
    with open_dict(decoding):
        decoding.strategy = "greedy_batch"
        decoding.tdt_include_token_duration = True
        for key, value in (fusion.nemo_greedy_options() if fusion is not None else {}).items():
            decoding.greedy[key] = value
    model.change_decoding_strategy(decoding, verbose=False)
    model.eval()
    try:
        computer = model.decoding.decoding.decoding_computer
        audio = torch.from_numpy(np.asarray(samples, np.float32))[None]
        samples_context = ContextSize(*(frames * frame_samples for frames in (context.left, context.chunk, context.right)))
        buffer = StreamingBatchedAudioBuffer(1, samples_context, audio.dtype, audio.device)
        total, left, right = audio.shape[1], 0, min(samples_context.chunk + samples_context.right, audio.shape[1])
        hypotheses, state = None, None
        with torch.no_grad():
            while left < total:
                length = min(right, total) - left
                last = right >= total
                buffer.add_audio_batch_(audio[:, left:right], audio_lengths=torch.tensor([length]), is_last_chunk=last,
                                        is_last_chunk_batch=torch.tensor([last]))
                encoded, encoded_length = model(input_signal=buffer.samples,
                                                input_signal_length=buffer.context_size_batch.total())
                frames = buffer.context_size_batch.subsample(frame_samples)
                encoded = encoded.transpose(1, 2)[:, buffer.context_size.subsample(frame_samples).left:]
                out_len = encoded_length - frames.left if last else frames.chunk
                chunk_hypotheses, state = computer(x=encoded, out_len=out_len, prev_batched_state=state)
                hypotheses = chunk_hypotheses if hypotheses is None else hypotheses.merge_(chunk_hypotheses)
                left, right = right, min(right + samples_context.chunk, total)
        (hypothesis,) = batched_hyps_to_hypotheses(hypotheses, batch_size=1)
        hypothesis.text = model.tokenizer.ids_to_text(hypothesis.y_sequence.tolist())
        return hypothesis
    finally:
        model.change_decoding_strategy(original, verbose=False)


def encoder_frame_samples(model) -> int:
    """Audio samples per encoder frame as NeMo's streaming script counts them (hop made divisible by subsampling)."""
    factor = model.encoder.subsampling_factor
    hop = int(model.cfg.preprocessor.sample_rate * model.cfg.preprocessor.window_stride)
    return (hop // factor) * factor * factor


def streaming_context(model, left_seconds: float, chunk_seconds: float, right_seconds: float):
    """NeMo's ContextSize in encoder frames for the seconds asked (each rounded down to whole frames)."""
    from nemo.collections.asr.parts.utils.streaming_utils import ContextSize

    per_second = 1.0 / model.cfg.preprocessor.window_stride / model.encoder.subsampling_factor
    return ContextSize(*(int(seconds * per_second) for seconds in (left_seconds, chunk_seconds, right_seconds)))


def nemo_transcribe(model, paths: list[str], **options) -> list:
    """NeMo's own transcribe(); afterwards the model is put back in eval mode.

    NeMo 2.3.1's transcribe(timestamps=True) leaves the encoder in training mode (dropout on), which
    would silently randomize every later reference computation on the same model.
    """
    if options.get("timestamps"):
        word_timestamps_only(model)
    try:
        return model.transcribe(paths, verbose=False, **options)
    finally:
        model.eval()


def hypothesis_decisions(hypothesis) -> tuple[list[int], list[int], list[int]]:
    """Token ids, frames and durations of a NeMo hypothesis (as Transcript.decisions), whether or not
    timestamps were asked for (transcribe(timestamps=True) makes `timestamp` a dict)."""
    # An empty hypothesis holds plain lists where a non-empty one holds tensors.
    frames = hypothesis.timestamp["timestep"] if isinstance(hypothesis.timestamp, dict) else hypothesis.timestamp
    return tuple(np.asarray(values).astype(int).tolist() for values in
                 (hypothesis.y_sequence, frames, hypothesis.token_duration))


def word_timestamps_only(model) -> None:
    """Ask NeMo for char and word timestamps but not segments (decisions are unaffected).

    NeMo 2.3.1's segment grouping indexes word[-1] and raises IndexError on an empty word, which a
    random-weight model produces (a lone word-boundary token); we compare words, never segments.
    """
    from omegaconf import open_dict

    with open_dict(model.cfg.decoding):
        model.cfg.decoding.rnnt_timestamp_type = "word"


def nemo_runtime(model, contract: Contract, name: str, remember: bool = True) -> TorchRuntime:
    """NeMo's modules computing one component's outputs from its contract inputs (in eval mode): the
    component's own declared reference. With `remember` (not for timing it), references that run the
    conformer encoder are remembered per model and inputs (`RememberedEncoderRuntime`)."""
    model.eval()
    component = contract[name]
    function = COMPONENTS[name].reference(model, contract)
    if remember and COMPONENTS[name].gate in ENCODING_GATES:
        return RememberedEncoderRuntime(function, component.inputs, component.outputs, model, name)
    return TorchRuntime(function, component.inputs, component.outputs)


# Gate kinds whose NeMo reference runs the encoder (seconds per 15 s window at full width).
ENCODING_GATES = ("audio", "encoder")
# model -> {(component, its outputs, inputs digest): (weights state, outputs)}; forgotten with the model.
_REMEMBERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
REMEMBERED_PER_MODEL = 16


class RememberedEncoderRuntime(TorchRuntime):
    """NeMo's reference, computed once per (component and its interface, input bytes, weights): the parity
    gates of a clip, and the same clip at both precisions, ask for NeMo's encoder output of one input several
    times. The weights' state is every parameter and buffer (held weakly) with its in-place version, so a
    changed weight (a mixed-precision plan search) or a reloaded one is computed afresh. Module settings that
    are not tensors are not part of it: nemo_runtime puts the model in eval mode, where none of the encoder's
    settings that tests touch (dither) acts."""

    def __init__(self, function: Callable, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 model, name: str):
        super().__init__(function, inputs, outputs)
        self.model = model
        self.name = name

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        remembered = _REMEMBERED.setdefault(self.model, {})
        key = (self.name, self.outputs, inputs_digest(with_defaults(inputs, self.inputs), self.inputs))
        tensors = (*self.model.parameters(), *self.model.buffers())
        if key not in remembered or not same_weights(remembered[key][0], tensors):
            remembered.pop(key, None)
            if len(remembered) >= REMEMBERED_PER_MODEL:
                remembered.pop(next(iter(remembered)))
            state = tuple((weakref.ref(tensor), in_place_version(tensor)) for tensor in tensors)
            remembered[key] = (state, super().predict(inputs))
        return {name: value.copy() for name, value in remembered[key][1].items()}


def inputs_digest(inputs: dict[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for spec in specs:
        value = np.ascontiguousarray(inputs[spec.name])
        digest.update(f"{spec.name}{value.dtype}{value.shape}".encode())
        digest.update(value.data)
    return digest.hexdigest()


def same_weights(state: tuple, tensors: tuple) -> bool:
    """Whether `tensors` are the very tensors of `state`, none changed in place since."""
    return len(state) == len(tensors) and all(
        ref() is tensor and version == in_place_version(tensor) for (ref, version), tensor in zip(state, tensors))


def in_place_version(tensor: torch.Tensor) -> int | None:
    """The tensor's count of in-place changes; None for an inference tensor, which keeps none. NeMo leaves
    such buffers behind: transcribe() runs under inference mode, and a longer file than any before makes the
    encoder rebuild its positional encodings there. It replaces them with a new tensor (seen by identity);
    a change in place inside inference mode would go unseen."""
    return None if tensor.is_inference() else tensor._version


def nemo_decoder_sequence(model, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NeMo's prediction network over a whole token sequence from zero state: outputs [U, H], h, c."""
    with torch.no_grad():
        output, (h, c) = model.decoder.predict(torch.from_numpy(np.asarray(tokens)[None]).long(), state=None,
                                               add_sos=False)
    return output[0].numpy(), h.numpy(), c.numpy()


def nemo_transcriber(model, contract: Contract, joint_mode: str = "joint", chunking=None, fused_frontend=False,
                     token_bias: np.ndarray | None = None, fusion=None):
    """The package transcriber's exact chunking and loop, with NeMo's modules (each window as a file)
    in place of packages (and the same custom vocabulary `fusion`, advanced the same way)."""
    import sentencepiece as spm

    from exporters.decoding.chunking import Chunking
    from exporters.decoding.transcriber import Transcriber, components_needed

    tokenizer = spm.SentencePieceProcessor(model_proto=model.tokenizer.tokenizer.serialized_model_proto())
    runtimes = {name: nemo_runtime(model, contract, name) for name in components_needed(joint_mode, fused_frontend)}
    models = None if fusion is None else fusion.models(model.tokenizer, contract.model.vocab_size)
    return Transcriber(runtimes, contract, tokenizer, joint_mode, fused_frontend, chunking or Chunking(), token_bias,
                       fusion=models)


def nemo_transcribe_window(model, audio_signal: np.ndarray, audio_length: np.ndarray):
    """NeMo's transcribe(timestamps=True) steps on one zero-padded window with its true length, batch of 1.

    transcribe() on a file shorter than the window computes its STFT without the zero padding a
    fixed-window package sees; in a batch with a full-window file it pads the same way, but NeMo 2.3.1's
    batched greedy TDT then records wrong token durations for batches of more than one. These are
    transcribe's own steps (forward, rnnt_decoder_predictions_tensor, process_timestamp_outputs) on
    exactly the package's input.
    """
    from nemo.collections.asr.parts.utils.timestamp_utils import process_timestamp_outputs
    from omegaconf import open_dict

    if not model.cfg.decoding.get("compute_timestamps") or model.cfg.decoding.get("rnnt_timestamp_type") != "word":
        word_timestamps_only(model)
        with open_dict(model.cfg.decoding):
            model.cfg.decoding.compute_timestamps = True
            model.cfg.decoding.preserve_alignments = True
        model.change_decoding_strategy(model.cfg.decoding, verbose=False)
    model.eval()
    with torch.no_grad():
        encoded, encoded_length = model.forward(input_signal=torch.from_numpy(audio_signal),
                                                input_signal_length=torch.from_numpy(audio_length).long())
        hypotheses = model.decoding.rnnt_decoder_predictions_tensor(encoded, encoded_length, return_hypotheses=True)
    return process_timestamp_outputs(hypotheses, model.encoder.subsampling_factor,
                                     model.cfg.preprocessor.window_stride)[0]


class NemoGreedy:
    """NeMo's own greedy decisions (token ids, frames, durations) on in-memory clips, each decoded alone:
    its preprocessor, encoder and `rnnt_decoder_predictions_tensor`, what transcribe() runs per file."""

    def __init__(self, model, clips: list[np.ndarray]):
        self.model = model.eval()
        self.clips = clips

    def encode(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        outputs = []
        with torch.no_grad():
            for clip in self.clips:
                signal = torch.from_numpy(np.asarray(clip, np.float32)[None].copy())
                mel, mel_length = self.model.preprocessor(input_signal=signal, length=torch.tensor([len(clip)]))
                outputs.append(self.model.encoder(audio_signal=mel, length=mel_length))
        return outputs

    def decide(self, encoded=None) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        results = []
        with torch.no_grad():
            for output, length in encoded if encoded is not None else self.encode():
                (hypothesis,) = self.model.decoding.rnnt_decoder_predictions_tensor(output, length,
                                                                                    return_hypotheses=True)
                results.append(tuple(tuple(values) for values in hypothesis_decisions(hypothesis)))
        return results
