"""A vectorised pure-PyTorch TDT loss that runs on CPU.

NeMo 2.3.1's `tdt` loss is numba-CUDA only ("TDT is not yet implemented for non CUDA computation")
and its `tdt_pytorch` reference loops per element and calls `.cuda()`. This computes the same
forward variable (Eq. 7 of https://arxiv.org/abs/2304.06795, as NeMo's reference does, including
sigma under-normalisation; omega's random RNN-T sampling is left out), looping over time only:
within one frame the duration-0 label arcs form a chain along u, solved with a log-cumsum-exp.
"""

from __future__ import annotations

import torch

NEG = -1.0e4  # "impossible" in log space; finite so gradients stay finite


def tdt_loss(logits: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor,
             blank: int, durations: list[int], sigma: float = 0.0) -> torch.Tensor:
    """Per-utterance negative log-likelihood.

    logits: joint output [B, T, U+1, V+1+len(durations)] (raw or log-softmaxed over the whole last axis:
    each slice is re-normalised here, which undoes a shared shift). labels: [B, >=U] int.
    """
    n_dur = len(durations)
    # Gather the blank and label columns before the float64 recursion: the full [B, T, U+1, V+1]
    # tensor stays in the logits' dtype (same values, a fraction of the memory and backward time).
    label_lp = logits[..., :-n_dur].log_softmax(-1)
    dur_lp = logits[..., -n_dur:].log_softmax(-1).double()
    batch, frames, u1, _ = label_lp.shape
    blank_lp = label_lp[..., blank].double() - sigma  # [B, T, U+1]
    index = labels[:, : u1 - 1].long().clamp(min=0)
    emit_lp = label_lp[:, :, :-1, :].gather(-1, index[:, None, :, None].expand(batch, frames, u1 - 1, 1))
    emit_lp = emit_lp.squeeze(-1).double() - sigma  # [B, T, U]
    zero_col = label_lp.new_zeros(batch, 1)
    neg_col = label_lp.new_full((batch, 1), NEG)
    start = torch.cat([zero_col, label_lp.new_full((batch, u1 - 1), NEG)], dim=1)
    n_zero = durations.index(0) if 0 in durations else None

    alphas: list[torch.Tensor] = []
    for t in range(frames):
        if t == 0:
            arrivals = start
        else:
            terms = []
            for n, step in enumerate(durations):
                if step == 0 or t - step < 0:
                    continue
                prev = alphas[t - step]
                terms.append(prev + blank_lp[:, t - step] + dur_lp[:, t - step, :, n])
                emitted = prev[:, :-1] + emit_lp[:, t - step] + dur_lp[:, t - step, :-1, n]
                terms.append(torch.cat([neg_col, emitted], dim=1))
            arrivals = torch.logsumexp(torch.stack(terms), dim=0)
        if n_zero is not None and u1 > 1:
            chain = emit_lp[:, t] + dur_lp[:, t, :-1, n_zero]  # label arc u-1 -> u within frame t
            offsets = torch.cat([zero_col, chain.cumsum(dim=1)], dim=1)
            alpha = offsets + torch.logcumsumexp(arrivals - offsets, dim=1)
        else:
            alpha = arrivals
        alphas.append(alpha)
    alpha = torch.stack(alphas, dim=1)  # [B, T, U+1]

    rows = torch.arange(batch)
    finals = []
    for n, step in enumerate(durations):
        if step == 0:
            continue
        t = (act_lens.long() - step).clamp(min=0)
        u = label_lens.long()
        value = alpha[rows, t, u] + blank_lp[rows, t, u] + dur_lp[rows, t, u, n]
        finals.append(torch.where(act_lens.long() - step >= 0, value, torch.full_like(value, NEG)))
    return -torch.logsumexp(torch.stack(finals), dim=0).float()
