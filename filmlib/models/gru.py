"""A GRU that returns each question's last state, fast on the CPU.

The FiLM generator needs one thing from its 4096-wide GRU: the hidden state at each question's
last real token. ``torch.nn.GRU`` gets it right (with packed sequences it skips padding), but on
the CPU its backward pass is a chain of small autograd nodes: per time step one
(batch x 3H) @ (3H x H) product for the hidden gradient and one (3H x batch) @ (batch x H)
product for the weight gradient, each of which runs far below the machine's matmul peak.

``last_states`` computes the same function (PyTorch's GRU equations, gate order r, z, n, the
``weight_ih_l0 / weight_hh_l0 / bias_ih_l0 / bias_hh_l0`` of an ``nn.GRU``) with a hand-written
backward:

- the input projections of every real token are one matrix product (outside the recurrence);
- the state starts at zero, so step 0's hidden product is its bias alone (no product), and step 0's
  tokens add nothing to the hidden-weight gradient (they are left out of its product);
- questions are packed (sorted by length, time-major), so step t works on the first ``batch_sizes[t]`` rows only —
  padding costs nothing, and rows leave the product as their question ends;
- the per-step hidden products, (rows still running) x 4096 against the 4096 x 12288 weight and
  back, go through filmlib's panel GEMM (:mod:`filmlib.models.panel_gemm`): the weight is packed
  once per pass and streamed from memory while the kernel computes, where oneDNN's linear kernel
  (the fallback, about twice MKL's speed on this skinny shape) reads it and then computes;
- the backward keeps each step's gate gradients and forms the hidden-weight gradient with ONE
  (3H x tokens) @ (tokens x H) product after the loop, instead of one thin product per step.

Results match ``nn.GRU`` to float rounding (tests compare outputs and all gradients, and run
``gradcheck`` in float64). It handles one layer; the generator falls back to ``nn.GRU``
for several layers and on GPUs (cuDNN is already fast there).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from . import panel_gemm

__all__ = ["last_states", "fast_gru_supported"]


_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight.T (+ bias): oneDNN for float32 on the CPU, addmm otherwise."""
    if _LINEAR is not None and x.dtype == torch.float32 and x.device.type == "cpu":
        return _LINEAR(x, weight, bias, "none", [], "")
    weight = weight.to(x.dtype)                 # e.g. a float64 or bfloat16 model
    return torch.addmm(bias.to(x.dtype), x, weight.t()) if bias is not None else x @ weight.t()


# the per-step products through filmlib's panel GEMM where it applies (tests switch it off to
# compare with the oneDNN path)
use_panel_gemm = True


def _step_products(w: Tensor, backward: bool):
    """The recurrence's per-step product with the hidden weight w (3H x H), fixed over one pass:
    ``f(x, bias)`` = x @ w.T + bias (forward) or x @ w (backward). Through filmlib's panel GEMM
    on w packed once (:mod:`filmlib.models.panel_gemm`) where it applies, else oneDNN's linear."""
    k, n = (w.shape[0], w.shape[1]) if backward else (w.shape[1], w.shape[0])
    packed = None
    if (use_panel_gemm and w.dtype == torch.float32 and w.device.type == "cpu" and w.is_contiguous()
            and panel_gemm.supports(k, n) and panel_gemm.available()):
        packed = panel_gemm.pack(w, transposed=not backward)
    # oneDNN's linear wants B as (out x in): w itself forward, w.T backward (made contiguous, for
    # speed, only where oneDNN does the float32 products; a view serves the other dtypes)
    weight = w if not backward else w.t() if packed is not None else _transpose(w)

    def product(x: Tensor, bias: Tensor | None = None) -> Tensor:
        if packed is not None and x.dtype == torch.float32:
            return panel_gemm.matmul(x.contiguous(), packed, None if bias is None else bias.contiguous())
        return _linear(x, weight, bias)
    return product


def _transpose(w: Tensor, block: int = 256) -> Tensor:
    """w.t() as a contiguous tensor, copied in row blocks (about twice as fast as .contiguous()
    on a 12288 x 4096 matrix, whose plain transpose thrashes the cache)."""
    out = w.new_empty(w.shape[1], w.shape[0])
    for i in range(0, w.shape[0], block):
        out[:, i:i + block].copy_(w[i:i + block].t())
    return out


def fast_gru_supported(rnn: nn.GRU, device: torch.device) -> bool:
    """True where ``last_states`` applies: one unidirectional layer, on the CPU."""
    return (rnn.num_layers == 1 and not rnn.bidirectional and rnn.bias and device.type == "cpu"
            and rnn.batch_first)


class _GRURecurrence(torch.autograd.Function):
    """The recurrence over packed, length-sorted input gates; returns every row's last state.

    xg: (tokens, 3H) input gates W_ih x + b_ih, time-major packed (step 0's rows, then step 1's...)
    w_hh: (3H, H), b_hh: (3H,); batch_sizes: python list, rows active at each step (descending).
    Output: (N, H) with N = batch_sizes[0], row i the state after its last step (sorted order).
    """

    @staticmethod
    def forward(ctx, xg: Tensor, w_hh: Tensor, b_hh: Tensor, batch_sizes: list[int]) -> Tensor:
        H = w_hh.shape[1]
        N = batch_sizes[0]
        tokens = xg.shape[0]
        h = xg.new_zeros(N, H)                      # h0 = 0
        h_prev = xg.new_empty(tokens, H)            # state entering each step (for dW_hh, dz)
        gates = xg.new_empty(tokens, 3, H)          # r, z, n after their nonlinearities
        hn = xg.new_empty(tokens, H)                # W_hn h + b_hn (needed for dr)
        product = _step_products(w_hh, backward=False) if len(batch_sizes) > 1 else None
        start = 0
        for n in batch_sizes:
            rows = slice(start, start + n)
            hp = h[:n]
            h_prev[rows] = hp
            if start == 0:                          # h0 = 0: W_hh h0 + b_hh is the bias alone
                hg = b_hh.view(1, 3, H).expand(n, 3, H)
            else:
                hg = product(hp, b_hh).view(n, 3, H)
            xs = xg[rows].view(n, 3, H)
            rz = torch.sigmoid(xs[:, :2] + hg[:, :2])
            r, z = rz[:, 0], rz[:, 1]
            new = torch.tanh(torch.addcmul(xs[:, 2], r, hg[:, 2]))
            gates[rows, :2] = rz
            gates[rows, 2] = new
            hn[rows] = hg[:, 2]
            # h' = (1 - z) * n + z * h = n + z * (h - n)
            h[:n] = torch.addcmul(new, z, hp - new)
            start += n
        ctx.batch_sizes = batch_sizes
        ctx.save_for_backward(w_hh, h_prev, gates, hn)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        w_hh, h_prev, gates, hn = ctx.saved_tensors
        batch_sizes = ctx.batch_sizes
        H = w_hh.shape[1]
        tokens = h_prev.shape[0]
        product = _step_products(w_hh, backward=True) if len(batch_sizes) > 1 else None  # dh_prev = dhg @ w_hh
        dh = grad_h.contiguous().clone()            # rows that end later than t keep their grad_h
        dxg = grad_h.new_empty(tokens, 3, H)        # gradient of the input gates
        dhg = grad_h.new_empty(tokens, 3, H)        # gradient of the hidden gates W_hh h + b_hh
        end = tokens
        for step in range(len(batch_sizes) - 1, -1, -1):
            n = batch_sizes[step]
            rows = slice(end - n, end)
            g = gates[rows]
            r, z, new = g[:, 0], g[:, 1], g[:, 2]
            hp = h_prev[rows]
            d = dh[:n]
            d_new = d * (1 - z) * (1 - new * new)               # through tanh
            d_z = d * (hp - new) * z * (1 - z)                  # through sigmoid
            d_r = d_new * hn[rows] * r * (1 - r)
            dx = dxg[rows]
            dx[:, 0], dx[:, 1], dx[:, 2] = d_r, d_z, d_new
            dg = dhg[rows]
            dg[:, 0], dg[:, 1] = d_r, d_z
            torch.mul(d_new, r, out=dg[:, 2])
            if step > 0:                                        # h0 is a constant: no gradient
                dh[:n] = torch.addcmul(product(dg.view(n, 3 * H)), d, z)
            end -= n
        dhg2 = dhg.view(tokens, 3 * H)
        first = batch_sizes[0]                                  # step 0's rows: h_prev = h0 = 0
        grad_w = dhg2[first:].t() @ h_prev[first:]              # one product over all later tokens
        grad_b = dhg2.sum(0)
        return dxg.view(tokens, 3 * H), grad_w, grad_b, None


@torch.compiler.disable      # a Python loop over steps, not traceable; a whole-model compile runs it eagerly
def last_states(rnn: nn.GRU, x: Tensor, lengths: Tensor) -> Tensor:
    """The GRU state after each sequence's last real step: x (N, T, E) batch-first, lengths (N,)
    (each >= 1) -> (N, H), in the input order. Same numbers as running ``rnn`` on a packed sequence."""
    if not fast_gru_supported(rnn, x.device):
        raise ValueError("last_states handles one unidirectional, batch-first GRU layer with biases on the CPU")
    lengths = lengths.to("cpu", torch.long)
    N, T = x.shape[:2]
    if lengths.numel() != N or int(lengths.min()) < 1 or int(lengths.max()) > T:
        raise ValueError(f"lengths must be {N} values in 1..{T}; got {lengths.tolist()}")
    # pack_padded_sequence sorts by length and lays the real tokens out time-major
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    xg = torch.nn.functional.linear(packed.data, rnn.weight_ih_l0, rnn.bias_ih_l0)  # one product (bf16 under an autocast)
    # the recurrence runs in float32 whatever the autocast, so the state keeps fp32 precision over
    # the steps (the cpu preset's training step ran at the same speed either way on 2 threads)
    with torch.autocast(x.device.type, enabled=False):
        h_sorted = _GRURecurrence.apply(xg.to(rnn.weight_hh_l0.dtype), rnn.weight_hh_l0, rnn.bias_hh_l0, packed.batch_sizes.tolist())
    return h_sorted.index_select(0, packed.unsorted_indices)
