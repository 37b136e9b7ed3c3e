"""The pixel stem's 4x4 stride-2 convolution, with a faster weight gradient on the CPU.

On the CPU the `paper` pixel stem spends most of its backward pass in one place: the weight
gradient of its second layer (128 -> 128 channels, 112x112 -> 56x56, batch 64). oneDNN computes
it at about a third of this machine's matmul peak (``benchmarks/bench_stem_conv.py``). The same
gradient is one ordinary matrix product once the input is laid out "space to depth":

- pad the input by one and cut it into 2x2 cells: ``s2d[n, u, v, (a, b, c)] = x_pad[n, 2u+a, 2v+b, c]``
  (``(H/2+1) x (W/2+1)`` cells of ``4C`` values). The 4x4 stride-2 convolution is then a 2x2
  stride-1 convolution over ``s2d``: kernel tap ``(2i+a, 2j+b)`` reads cell ``(oh+i, ow+j)``.
- so ``dW[:, :, 2i+a, 2j+b] = sum over cells (u, v) of go[u-i, v-j] (x) s2d[u, v, (a, b)]``. With the
  output gradient copied four times, shifted by each kernel offset ``(i, j)`` (zero where
  ``(u-i, v-j)`` is not an output position), that is ONE (4O x cells) @ (cells x 4C) product, the
  same arithmetic as the convolution's plus the one-cell border. (Four (O x cells) @ (cells x 4C)
  products over shifted slices of the cells, the first version, took 5-10% longer on the
  `paper` stem's second and third layers: 1,025-1,092 ms against 960-1,018, and 279-302 against
  260-273, five interleaved pairs each.)

For an image input (3 channels) that product is too thin (``4C = 12`` columns). There
the weight gradient is one product over the unfolded patches instead (``im2col_weight_grad``):
every output position's 4x4xC input patch is one row of a (positions x 16C) matrix, and
``dW = go_flat^T @ patches``. On the `paper` stem's first layer (3 -> 128, 224 -> 112, batch 64,
freed memory kept) four interleaved pairs took 140-214 ms against oneDNN's 231-290 ms.

The forward pass and the input gradient stay with oneDNN (they run near peak already). The
weight gradient matches oneDNN's to float rounding (tests compare them, and run ``gradcheck``).
``StemConv2d`` is an ``nn.Conv2d`` (same parameters, same state_dict); it takes the fast path
only where it measured faster: CPU, float32 (no autocast), channels-last input, an output of at least 28x28, and
at least 64 input channels (space to depth) or at most 4 (unfolded patches). Everywhere else it is
``nn.Conv2d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StemConv2d", "im2col_weight_grad", "s2d_weight_grad"]

MIN_CHANNELS = 64        # below this the space-to-depth products are too thin for oneDNN to lose
MAX_IM2COL_CHANNELS = 4  # image inputs: one product over unfolded 4x4 patches (3->128 at 224: ~1.5x)
MIN_OUT_SIDE = 28        # 128->128: 112->56 about twice as fast, 56->28 ~1.5x, 28->14 a tie


def _sizes(name: str, go: Tensor, x: Tensor) -> tuple[int, int, int, int, int]:
    """(N, C, O, Ho, Wo) of an NHWC input x and output gradient go of a 4x4 stride-2 convolution;
    raises unless the input sides are even and the output is half their size."""
    N, H, W, C = x.shape
    if H % 2 or W % 2 or go.shape[:3] != (N, H // 2, W // 2):
        raise ValueError(f"{name} needs an even input side and a half-size output; "
                         f"got input {tuple(x.shape)} and output gradient {tuple(go.shape)}")
    return N, C, go.shape[-1], H // 2, W // 2


def s2d_weight_grad(go: Tensor, x: Tensor) -> Tensor:
    """The weight gradient of a 4x4, stride-2, padding-1 convolution without groups or dilation.

    go: (N, Ho, Wo, O) and x: (N, H, W, C), both channels-last (NHWC) and contiguous, with
    H = 2 Ho and W = 2 Wo. Returns (O, C, 4, 4), contiguous.
    """
    N, C, O, Ho, Wo = _sizes("s2d_weight_grad", go, x)
    U, V = Ho + 1, Wo + 1                              # cells of the padded input
    rows = N * U * V
    cells = x.new_empty(N, U, V, 2, 2, C)              # cells[n, u, v, a, b, c] = x_pad[n, 2u+a, 2v+b, c]
    cells[:, 0].zero_(), cells[:, Ho].zero_(), cells[:, :, 0].zero_(), cells[:, :, Wo].zero_()  # the padding
    xr = x.view(N, Ho, 2, Wo, 2, C)                    # x[n, 2p+q, 2r+t, c]
    # padded row 2u+a is x row 2u+a-1: a=1 -> x row 2u (q=0), a=0 -> x row 2(u-1)+1 (q=1)
    cells[:, :Ho, :Wo, 1, 1] = xr[:, :, 0, :, 0]
    cells[:, 1:, :Wo, 0, 1] = xr[:, :, 1, :, 0]
    cells[:, :Ho, 1:, 1, 0] = xr[:, :, 0, :, 1]
    cells[:, 1:, 1:, 0, 0] = xr[:, :, 1, :, 1]
    # shifted[n, u, v, i, j, o] = go[n, u-i, v-j, o]: the output gradient that cell (u, v) meets
    # through kernel offset (i, j); zero where (u-i, v-j) is not an output position
    shifted = go.new_empty(N, U, V, 2, 2, O)
    for i in range(2):
        for j in range(2):
            shifted[:, i:i + Ho, j:j + Wo, i, j] = go
            shifted[:, Ho * (1 - i), :, i, j].zero_()  # the row go does not reach
            shifted[:, :, Wo * (1 - j), i, j].zero_()  # and the column
    dw = shifted.view(rows, 4 * O).t() @ cells.view(rows, 4 * C)   # [(i, j, o), (a, b, c)]
    # dw[i, j, o, a, b, c] -> W[o, c, 2i+a, 2j+b]
    return dw.view(2, 2, O, 2, 2, C).permute(2, 5, 0, 3, 1, 4).reshape(O, C, 4, 4)


def im2col_weight_grad(go: Tensor, x: Tensor) -> Tensor:
    """The same weight gradient as :func:`s2d_weight_grad` (same arguments, NHWC), as one
    (O x positions) @ (positions x 16C) product over the unfolded 4x4 input patches; for inputs
    with few channels, where the space-to-depth products would be too thin."""
    N, C, O, Ho, Wo = _sizes("im2col_weight_grad", go, x)
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))                   # (N, H+2, W+2, C), zero border
    sn, sh, sw, sc = xp.stride()
    patches = xp.as_strided((N, Ho, Wo, 4, 4, C), (sn, 2 * sh, 2 * sw, sh, sw, sc))
    patches = patches.reshape(N * Ho * Wo, 16 * C)     # one copy: [position, (kh, kw, c)]
    dw = go.reshape(N * Ho * Wo, O).t() @ patches      # (O, 16C)
    return dw.view(O, 4, 4, C).permute(0, 3, 1, 2).contiguous()


class _StemConv(torch.autograd.Function):
    """conv2d(x, weight, bias, stride 2, padding 1) with the weight gradient of s2d_weight_grad
    (or of im2col_weight_grad for inputs of at most MAX_IM2COL_CHANNELS channels)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride=2, padding=1)

    @staticmethod
    def backward(ctx, go: Tensor):
        x, weight = ctx.saved_tensors
        go = go.contiguous(memory_format=torch.channels_last)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(go, x, weight, None, [2, 2], [1, 1], [1, 1], False,
                                                     [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = torch.empty_like(weight)              # in the weight's own memory format
            grad = im2col_weight_grad if x.shape[1] <= MAX_IM2COL_CHANNELS else s2d_weight_grad
            gw.copy_(grad(go.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1)))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = go.sum((0, 2, 3))
        return gx, gw, gb


class StemConv2d(nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)`` whose weight gradient takes
    the space-to-depth matrix products above where they are faster (see the module docstring).
    ``fast`` forces the choice: None (default) decides by device, dtype, layout and shape."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, fast: bool | None = None):
        super().__init__(in_channels, out_channels, 4, stride=2, padding=1, bias=bias)
        self.fast = fast

    def use_fast_path(self, x: Tensor) -> bool:
        if torch.is_autocast_enabled("cpu") and x.device.type == "cpu":
            return False                                  # bf16 products: oneDNN's own bf16 kernels
        if self.fast is not None:
            return self.fast and x.dim() == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
                and self.weight.requires_grad and torch.is_grad_enabled()
                and x.is_contiguous(memory_format=torch.channels_last)
                and (self.in_channels >= MIN_CHANNELS or self.in_channels <= MAX_IM2COL_CHANNELS)
                and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
                and min(x.shape[2], x.shape[3]) // 2 >= MIN_OUT_SIDE)

    def forward(self, x: Tensor) -> Tensor:
        if not self.use_fast_path(x):
            return super().forward(x)
        x = x.contiguous(memory_format=torch.channels_last)
        return _StemConv.apply(x, self.weight, self.bias)
