"""filmlib.models.gru: the CPU GRU with a hand-written backward computes nn.GRU's function."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from filmlib.models import FiLMGenerator, panel_gemm, preset
from filmlib.models.gru import _GRURecurrence, _transpose, fast_gru_supported, last_states


def reference_last_states(gru, x, lengths):
    _, h = gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    return h[-1]


def spy_products(monkeypatch):
    """Record the row count of every per-step product, by path: "panel" (filmlib's panel GEMM)
    or "onednn" (oneDNN's linear)."""
    from filmlib.models import gru as gru_module
    from filmlib.models import panel_gemm
    calls = {"panel": [], "onednn": []}
    real_linear, real_matmul = gru_module._linear, panel_gemm.matmul
    monkeypatch.setattr(gru_module, "_linear", lambda *a: calls["onednn"].append(a[0].shape[0]) or real_linear(*a))
    monkeypatch.setattr(panel_gemm, "matmul", lambda x, *a: calls["panel"].append(x.shape[0]) or real_matmul(x, *a))
    return calls


# hidden 24: 3H = 72 is not a multiple of 16, so oneDNN's path; hidden 32: the panel GEMM's
@pytest.mark.parametrize("hidden, path", [(24, "onednn"), (32, "panel")])
@pytest.mark.parametrize("lengths", [[3, 9, 1, 5, 9, 2, 7], [4, 4, 4], [1], [6, 1, 1, 1]])
def test_matches_nn_gru_outputs_and_every_gradient(lengths, hidden, path, monkeypatch):
    if path == "panel" and not panel_gemm.available():
        pytest.skip("filmlib's panel GEMM cannot be built here (test_panel_gemm says why)")
    calls = spy_products(monkeypatch)
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, hidden, batch_first=True)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()) + 2, 6, requires_grad=True)  # extra padding
    w = torch.randn(len(lengths), hidden)
    ref = reference_last_states(gru, x, lengths)
    ours = last_states(gru, x, lengths)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    wrt = [x, *gru.parameters()]
    g_ref = torch.autograd.grad((ref * w).sum(), wrt)
    g_ours = torch.autograd.grad((ours * w).sum(), wrt)
    for name, a, b in zip(["x", "w_ih", "w_hh", "b_ih", "b_hh"], g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    pad_grad = g_ours[0][0, int(lengths[0]):]                  # padding gets exactly no gradient
    assert torch.count_nonzero(pad_grad) == 0
    steps = 2 * (int(lengths.max()) - 1)                       # forward and backward, none for h0
    assert len(calls[path]) == steps and not calls["onednn" if path == "panel" else "panel"]


def test_gradcheck_in_float64():
    torch.manual_seed(1)
    gru = torch.nn.GRU(3, 4, batch_first=True).double()
    xg = torch.randn(7, 12, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w, b: _GRURecurrence.apply(a, w, b, [3, 2, 1, 1]),
                                    (xg, gru.weight_hh_l0, gru.bias_hh_l0))
    x = torch.randn(4, 5, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: last_states(gru, x, torch.tensor([5, 2, 3, 1])), (x,))


def test_blocked_transpose():
    w = torch.randn(700, 33)
    assert torch.equal(_transpose(w, block=64), w.t())


def test_rejects_what_it_does_not_compute():
    gru = torch.nn.GRU(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="lengths must be 2 values in 1..5"):
        last_states(gru, x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths must be 2 values in 1..5"):
        last_states(gru, x, torch.tensor([6, 3]))
    assert not fast_gru_supported(torch.nn.GRU(3, 4, num_layers=2, batch_first=True), torch.device("cpu"))
    assert not fast_gru_supported(gru, torch.device("cuda"))
    with pytest.raises(ValueError, match="one unidirectional"):
        last_states(torch.nn.GRU(3, 4, bidirectional=True, batch_first=True), x, torch.tensor([5, 3]))


def test_generator_takes_the_fast_path_with_the_same_numbers():
    torch.manual_seed(2)
    gen = FiLMGenerator(preset("smoke", 20, 5))
    q = torch.tensor([[1, 5, 6, 7, 2, 0, 0], [1, 8, 2, 0, 0, 0, 0], [1, 4, 4, 4, 4, 9, 2]])
    lengths = torch.tensor([5, 3, 7])
    expected = reference_last_states(gen.rnn, gen.embed(q), lengths)
    torch.testing.assert_close(gen.encode(q), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("hidden, path", [(8, "onednn"), (16, "panel")])
def test_no_hidden_product_on_the_zero_start_state(monkeypatch, hidden, path):
    """Step 0 starts from h0 = 0: its hidden gates are the bias alone, so the forward makes one
    product per later step and the backward one per step after the first (none for h0)."""
    if path == "panel" and not panel_gemm.available():
        pytest.skip("filmlib's panel GEMM cannot be built here (test_panel_gemm says why)")
    calls = spy_products(monkeypatch)
    torch.manual_seed(0)
    rnn = torch.nn.GRU(5, hidden, batch_first=True)
    h = last_states(rnn, torch.randn(3, 4, 5), torch.tensor([4, 2, 3]))
    assert calls[path] == [3, 2, 1]                 # steps 1..3 (rows still running), none for step 0
    calls[path].clear()
    h.sum().backward()
    assert calls[path] == [1, 2, 3]                 # backward, steps 3..1


def test_both_paths_give_the_same_numbers(monkeypatch):
    if not panel_gemm.available():
        pytest.skip("filmlib's panel GEMM cannot be built here (test_panel_gemm says why)")
    from filmlib.models import gru as gru_module
    torch.manual_seed(3)
    rnn = torch.nn.GRU(7, 48, batch_first=True)
    x = torch.randn(9, 11, 7, requires_grad=True)
    lengths = torch.tensor([11, 3, 7, 1, 11, 5, 9, 2, 6])
    results = []
    for use in (True, False):
        monkeypatch.setattr(gru_module, "use_panel_gemm", use)
        h = last_states(rnn, x, lengths)
        results.append((h, *torch.autograd.grad(h.square().sum(), [x, *rnn.parameters()])))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_under_a_cpu_autocast_the_recurrence_stays_float32_on_the_panel_gemm(monkeypatch):
    """Under a CPU bfloat16 autocast the input projection is bf16 (one large product), but the
    recurrence runs in float32 through the panel GEMM: the states are float32 and match the
    oneDNN path's on the same rounded input gates."""
    if not panel_gemm.available():
        pytest.skip("filmlib's panel GEMM cannot be built here (test_panel_gemm says why)")
    from filmlib.models import gru as gru_module
    torch.manual_seed(0)
    rnn = torch.nn.GRU(5, 16, batch_first=True)
    x = torch.randn(3, 4, 5, requires_grad=True)
    calls = []
    real = panel_gemm.matmul
    monkeypatch.setattr(panel_gemm, "matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    for use in (True, False):
        monkeypatch.setattr(gru_module, "use_panel_gemm", use)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = last_states(rnn, x, torch.tensor([4, 2, 3]))
        results.append((h, *torch.autograd.grad(h.sum(), [x, rnn.weight_hh_l0])))
    assert results[0][0].dtype == torch.float32
    assert calls                                                  # the panel GEMM did the steps
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    plain = last_states(rnn, x, torch.tensor([4, 2, 3]))         # no autocast: within bf16 rounding
    torch.testing.assert_close(results[0][0], plain, atol=2e-2, rtol=2e-2)
