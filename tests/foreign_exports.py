"""Foreign exports: Parakeet packages as another team's converter script would make them.

Written here, independently of `exporters/components`: thin torch modules that call NeMo's own modules,
each converted with a plain `ct.convert` call. Other file names than ours, other tensor names, the
encoder's frames laid out [1, T, D], no decoder length input and no top-K outputs: all within what the
contract allows. `FLAWS` seeds one mistake each, the kind a converter makes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import coremltools as ct
import numpy as np
import torch

FAITHFUL = "faithful"
# flaw -> what it breaks (the cause `compare` must name)
FLAWS = {
    "unmasked_subsampling": "the encoder's subsampling convolutions read the window's padding (no mask)",
    "end_of_audio_padding": "the encoder ignores the valid length: padding taken for audio",
    "swapped_state": "the decoder returns (c, h) as (h, c)",
    "transposed_state": "the decoder's state tensors hold [hidden, layers] laid out as [layers, 1, hidden]",
    "duration_mapping": "joint_decision's duration index counts the durations list backwards",
    "fp16_overflow": "an fp16 encoder with an intermediate beyond fp16's range",
    "wrong_window": "joint packages built for a 10 s window beside a 15 s encoder",
    "compressed_weights": "a 2-bit palettized encoder",
}
FILE_NAMES = {"preprocessor": "MelSpectrogram", "encoder": "ParakeetEncoder", "decoder": "PredictionNetwork", "joint": "RNNTJoint",
              "joint_decision": "JointDecision"}


class Preprocessor(torch.nn.Module):
    """audio [1, S], audio_len [1] -> features [1, n_mels, M], features_length [1]: NeMo's preprocessor, its STFT
    traced as a convolution with a DFT basis made in float64 (coremltools' own lowering of torch.stft builds
    the basis in fp32 and misses NeMo by ~7e-3 log-mel units in quiet bins, which the mel gate catches)."""

    def __init__(self, preprocessor):
        super().__init__()
        self.preprocessor = preprocessor
        featurizer = preprocessor.featurizer
        n_fft, window = featurizer.n_fft, featurizer.window.double().numpy()
        padded_window = np.zeros(n_fft)
        start = (n_fft - window.size) // 2
        padded_window[start:start + window.size] = window
        k, n = np.arange(n_fft // 2 + 1)[:, None], np.arange(n_fft)[None]
        angle = 2 * np.pi * ((k * n) % n_fft) / n_fft
        basis = np.concatenate([np.cos(angle) * padded_window, -np.sin(angle) * padded_window])
        self.register_buffer("basis", torch.from_numpy(basis).float().unsqueeze(1))

    def stft(self, x):
        """[B, n_fft/2 + 1, frames, 2] (real, imaginary), as torch.view_as_real(torch.stft(x, center=True))."""
        featurizer = self.preprocessor.featurizer
        padded = torch.nn.functional.pad(x.unsqueeze(1), (featurizer.n_fft // 2, featurizer.n_fft // 2))
        spectrum = torch.nn.functional.conv1d(padded, self.basis, stride=featurizer.hop_length)
        bins = featurizer.n_fft // 2 + 1
        return torch.stack([spectrum[:, :bins], spectrum[:, bins:]], dim=-1)

    def forward(self, audio, audio_len):
        features, features_length = self.preprocessor(input_signal=audio, length=audio_len.long())
        return features, features_length.int()

    @contextlib.contextmanager
    def tracing(self):
        """NeMo's featurizer calls this stft while tracing (its output is already real: view_as_real passes it)."""
        featurizer = self.preprocessor.featurizer
        view_as_real = torch.view_as_real
        featurizer.stft = self.stft
        torch.view_as_real = lambda x: x
        try:
            yield
        finally:
            del featurizer.stft
            torch.view_as_real = view_as_real


class Encoder(torch.nn.Module):
    """features [1, n_mels, M], features_length [1] -> encoded [1, T, D], encoded_length [1]: NeMo's encoder."""

    def __init__(self, encoder, ignore_length=False, overflow=False):
        super().__init__()
        self.encoder = encoder
        self.ignore_length = ignore_length
        self.overflow = overflow

    def forward(self, features, features_length):
        length = features_length.long()
        if self.ignore_length:
            length = torch.full_like(length, features.shape[-1])
        encoded, encoded_length = self.encoder(audio_signal=features, length=length)
        if self.overflow:
            scaled = encoded * 1000.0
            squared = scaled * scaled  # beyond 65504 in fp16 wherever |encoded| > 0.256
            encoded = encoded + (squared - squared)
        return encoded.transpose(1, 2), encoded_length.int()


@contextlib.contextmanager
def unmasked_subsampling():
    """NeMo's subsampling convolutions without their padding mask (as in NeMo before its masked conv stack)."""
    from nemo.collections.asr.parts.submodules import subsampling

    masked = subsampling.apply_channel_mask
    subsampling.apply_channel_mask = lambda tensor, mask: tensor
    try:
        yield
    finally:
        subsampling.apply_channel_mask = masked


class Decoder(torch.nn.Module):
    """tokens [1, 1], h0/c0 [L, 1, H] -> decoder_output [1, H, 1], h_next, c_next (NeMo's predict)."""

    def __init__(self, decoder, swap=False, transpose=False):
        super().__init__()
        self.decoder = decoder
        self.swap = swap
        self.transpose = transpose

    def relaid(self, state, inverse=False):
        layers, _, hidden = state.shape
        if inverse:
            return state.reshape(hidden, layers).t().reshape(layers, 1, hidden)
        return state.reshape(layers, hidden).t().reshape(layers, 1, hidden)

    def forward(self, tokens, h0, c0):
        if self.transpose:
            h0, c0 = self.relaid(h0, inverse=True), self.relaid(c0, inverse=True)
        output, (h, c) = self.decoder.predict(tokens.long(), state=[h0, c0], add_sos=False, batch_size=1)
        if self.transpose:
            h, c = self.relaid(h), self.relaid(c)
        if self.swap:
            h, c = c, h
        return output.transpose(1, 2), h, c


class Joint(torch.nn.Module):
    """encoder_output [1, T, D], decoder_output [1, H, 1] -> joint_output [1, T, 1, V + 1 + durations]: raw
    logits of NeMo's joint network on its two projections."""

    def __init__(self, joint):
        super().__init__()
        self.joint = joint

    def forward(self, encoder_output, decoder_output):
        f = self.joint.project_encoder(encoder_output)
        g = self.joint.project_prednet(decoder_output.transpose(1, 2))
        return self.joint.joint_net(f.unsqueeze(2) + g.unsqueeze(1))


class JointDecision(Joint):
    """-> token [1, T, 1], prob [1, T, 1], duration_index [1, T, 1]; no top-K."""

    def __init__(self, joint, tokens: int, reverse_durations=False):
        super().__init__(joint)
        self.tokens = tokens
        self.reverse_durations = reverse_durations

    def forward(self, encoder_output, decoder_output):
        logits = super().forward(encoder_output, decoder_output)
        token_logits, duration_logits = logits[..., :self.tokens], logits[..., self.tokens:]
        if self.reverse_durations:
            duration_logits = duration_logits.flip(-1)
        token = token_logits.argmax(-1)
        prob = torch.softmax(token_logits, -1).amax(-1)
        return token.int(), prob, duration_logits.argmax(-1).int()


def window_frames(model, seconds: float) -> tuple[int, int]:
    """Mel frames NeMo's preprocessor gives a window (its STFT frames) and the encoder frames NeMo's encoder makes of them."""
    samples = int(seconds * model.preprocessor._sample_rate)
    with torch.no_grad():
        mel, _ = model.preprocessor(input_signal=torch.zeros(1, samples), length=torch.tensor([samples]))
        mels = mel.shape[-1]
        _, encoded_length = model.encoder(audio_signal=torch.zeros(1, model.cfg.preprocessor.features, mels),
                                          length=torch.tensor([mels]))
    return mels, int(encoded_length[0])


def convert(module, example, inputs, outputs, fp16=False):
    module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    mlmodel = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name) for name in outputs],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                         compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32)
    return mlmodel


def build_foreign_export(model, target: Path, flaw: str = FAITHFUL, seconds: float = 15.0) -> Path:
    """Preprocessor, encoder, decoder, joint and joint_decision packages of `model` in `target`, with one seeded
    flaw (or none)."""
    target.mkdir(parents=True, exist_ok=True)
    n_mels = model.cfg.preprocessor.features
    mels, frames = window_frames(model, seconds)
    joint_frames = window_frames(model, 10.0)[1] if flaw == "wrong_window" else frames
    d_model, hidden = model.encoder.d_model, model.decoder.pred_hidden
    layers = model.decoder.pred_rnn_layers
    tokens = model.joint.num_classes_with_blank - model.joint.num_extra_outputs

    samples = int(seconds * model.preprocessor._sample_rate)
    preprocessor = Preprocessor(model.preprocessor)
    with preprocessor.tracing():
        convert(preprocessor, (torch.randn(1, samples), torch.tensor([samples], dtype=torch.int32)),
                [ct.TensorType("audio", shape=(1, samples), dtype=np.float32),
                 ct.TensorType("audio_len", shape=(1,), dtype=np.int32)],
                ["features", "features_length"]).save(str(target / f"{FILE_NAMES['preprocessor']}.mlpackage"))
    encoder = Encoder(model.encoder, ignore_length=flaw == "end_of_audio_padding", overflow=flaw == "fp16_overflow")
    with unmasked_subsampling() if flaw == "unmasked_subsampling" else contextlib.nullcontext():
        mlmodel = convert(encoder, (torch.randn(1, n_mels, mels), torch.tensor([mels], dtype=torch.int32)),
                          [ct.TensorType("features", shape=(1, n_mels, mels), dtype=np.float32),
                           ct.TensorType("features_length", shape=(1,), dtype=np.int32)],
                          ["encoded", "encoded_length"], fp16=flaw == "fp16_overflow")
    if flaw == "compressed_weights":
        import coremltools.optimize.coreml as cto

        config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=2,
                                                                             weight_threshold=512))
        mlmodel = cto.palettize_weights(mlmodel, config)
    mlmodel.save(str(target / f"{FILE_NAMES['encoder']}.mlpackage"))

    state = (layers, 1, hidden)
    decoder = Decoder(model.decoder, swap=flaw == "swapped_state", transpose=flaw == "transposed_state")
    convert(decoder, (torch.tensor([[1]], dtype=torch.int32), torch.zeros(state), torch.zeros(state)),
            [ct.TensorType("tokens", shape=(1, 1), dtype=np.int32),
             ct.TensorType("h0", shape=state, dtype=np.float32), ct.TensorType("c0", shape=state, dtype=np.float32)],
            ["decoder_output", "h_next", "c_next"]).save(str(target / f"{FILE_NAMES['decoder']}.mlpackage"))

    joint_inputs = [ct.TensorType("encoder_output", shape=(1, joint_frames, d_model), dtype=np.float32),
                    ct.TensorType("decoder_output", shape=(1, hidden, 1), dtype=np.float32)]
    example = (torch.randn(1, joint_frames, d_model), torch.randn(1, hidden, 1))
    convert(Joint(model.joint), example, joint_inputs, ["joint_output"]).save(
        str(target / f"{FILE_NAMES['joint']}.mlpackage"))
    decision = JointDecision(model.joint, tokens, reverse_durations=flaw == "duration_mapping")
    convert(decision, example, joint_inputs, ["token", "prob", "duration_index"]).save(
        str(target / f"{FILE_NAMES['joint_decision']}.mlpackage"))
    return target
