"""filmlib.models.stem_conv: the space-to-depth and unfolded-patch weight gradients compute the
convolution's."""
import pytest
import torch
import torch.nn.functional as F

from filmlib.models import FiLMModel, preset
from filmlib.models.stem_conv import StemConv2d, _StemConv, im2col_weight_grad, s2d_weight_grad

GRADS = [s2d_weight_grad, im2col_weight_grad]


def nhwc(t):
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("grad", GRADS)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 5), (3, 7, 6, 10, 4), (1, 2, 2, 2, 3), (2, 16, 12, 4, 8)])
def test_weight_grad_matches_the_convolution_backward(shape, grad):
    N, C, H, W, O = shape
    torch.manual_seed(0)
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    w = torch.randn(O, C, 4, 4, dtype=torch.float64, requires_grad=True)
    go = torch.randn(N, O, H // 2, W // 2, dtype=torch.float64)
    (ref,) = torch.autograd.grad(F.conv2d(x, w, stride=2, padding=1), w, go)
    ours = grad(nhwc(go).permute(0, 2, 3, 1), nhwc(x).permute(0, 2, 3, 1))
    assert ours.shape == (O, C, 4, 4)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("grad", GRADS)
def test_weight_grad_ignores_garbage_in_fresh_memory(grad):
    """The buffers come from empty(): every padding cell must be zeroed, or NaN/inf left in the
    allocator's memory would leak into the product (0 * NaN = NaN)."""
    torch.manual_seed(0)
    x, go = torch.randn(2, 6, 8, 3), torch.randn(2, 3, 4, 5)
    before = grad(go, x)
    junk = [torch.full((1 << 16,), float("nan")) for _ in range(8)]   # recycled by the allocator
    del junk
    after = grad(go, x)
    assert torch.isfinite(after).all()
    torch.testing.assert_close(before, after)


@pytest.mark.parametrize("grad", GRADS)
def test_weight_grad_rejects_odd_sides(grad):
    with pytest.raises(ValueError, match="even input side"):
        grad(torch.randn(1, 2, 2, 4), torch.randn(1, 5, 4, 3))


@pytest.mark.parametrize("channels", [6, 3])                # space to depth; unfolded patches
def test_stem_conv_matches_nn_conv2d_in_value_and_every_gradient(channels):
    torch.manual_seed(0)
    ours = StemConv2d(channels, 5, fast=True).double()
    ref = torch.nn.Conv2d(channels, 5, 4, stride=2, padding=1).double()
    ref.load_state_dict(ours.state_dict())                      # same parameters, same names
    x = nhwc(torch.randn(3, channels, 10, 8, dtype=torch.float64))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    for a, b in [(x1.grad, x2.grad), (ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad)]:
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("channels", [3, 5])
def test_gradcheck_in_float64(channels):
    torch.manual_seed(1)
    x = nhwc(torch.randn(2, channels, 6, 4, dtype=torch.float64)).requires_grad_()
    w = torch.randn(2, channels, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_StemConv.apply, (x, w, b))


def test_fast_path_only_where_it_measured_faster():
    conv = StemConv2d(64, 8)
    big = nhwc(torch.randn(1, 64, 96, 96))
    assert conv.use_fast_path(big)
    assert not conv.use_fast_path(big.contiguous())             # NCHW: oneDNN's own path
    assert conv.use_fast_path(nhwc(torch.randn(1, 64, 56, 56)))       # 28x28 output: ~1.5x
    assert not conv.use_fast_path(nhwc(torch.randn(1, 64, 28, 28)))   # 14x14 output: a tie
    assert StemConv2d(3, 8).use_fast_path(nhwc(torch.randn(1, 3, 96, 96)))      # an image: patches
    assert not StemConv2d(8, 8).use_fast_path(nhwc(torch.randn(1, 8, 96, 96)))  # thin products
    assert not conv.use_fast_path(big.double())
    with torch.no_grad():
        assert not conv.use_fast_path(big)
    assert not StemConv2d(64, 8, fast=False).use_fast_path(big)


def test_paper_pixel_stem_uses_it_and_keeps_its_state_dict_names():
    model = FiLMModel(preset("smoke", 20, 5, "pixels"))
    convs = [m for m in model.network.stem if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, StemConv2d) for m in convs)
    assert "network.stem.0.weight" in model.state_dict() and "network.stem.0.bias" in model.state_dict()


def test_a_forced_fast_stem_trains_like_the_plain_one():
    """The smoke pixel model with every stem conv forced onto the fast path takes the same first
    step as with none (float64, so the two differ by rounding only)."""
    def one_step(fast):
        torch.manual_seed(0)
        model = FiLMModel(preset("smoke", 20, 5, "pixels")).double().to(memory_format=torch.channels_last)
        for m in model.modules():
            if isinstance(m, StemConv2d):
                m.fast = fast
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        images = nhwc(torch.randn(4, *model.cfg.input_shape, generator=g, dtype=torch.float64))
        q = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0], [1, 4, 4, 2], [1, 9, 2, 0]])
        loss = F.cross_entropy(model(images, q), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        opt.step()
        return [p.detach().clone() for p in model.parameters()]
    for a, b in zip(one_step(True), one_step(False)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("channels, used", [(3, "im2col_weight_grad"), (64, "s2d_weight_grad")])
def test_backward_picks_the_product_by_channel_count(channels, used, monkeypatch):
    from filmlib.models import stem_conv
    calls = []
    for name in ("im2col_weight_grad", "s2d_weight_grad"):
        real = getattr(stem_conv, name)
        monkeypatch.setattr(stem_conv, name, lambda go, x, real=real, name=name: calls.append(name) or real(go, x))
    conv = StemConv2d(channels, 4, fast=True)
    conv(nhwc(torch.randn(1, channels, 8, 8))).sum().backward()
    assert calls == [used]


def test_under_a_cpu_autocast_it_is_the_plain_convolution():
    """Under a bf16 autocast the input is fp32 but the product is bf16: the fast weight gradient
    (fp32 products) is not taken, and forward and backward run as nn.Conv2d's do."""
    conv = StemConv2d(3, 8)
    x = nhwc(torch.randn(2, 3, 96, 96))
    assert conv.use_fast_path(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv.use_fast_path(x)
        y = conv(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    plain = torch.nn.Conv2d(3, 8, 4, stride=2, padding=1)
    plain.load_state_dict(conv.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain(x).float().sum().backward()
    torch.testing.assert_close(conv.weight.grad, plain.weight.grad)       # the same path, the same numbers
    assert StemConv2d(3, 8, fast=True).use_fast_path(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not StemConv2d(3, 8, fast=True).use_fast_path(x)       # forced or not
