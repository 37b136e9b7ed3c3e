"""The FiLM model: the paper's sizes and layer order, the generator, every ablation and depth."""
import pytest
import torch
import torch.nn.functional as F

from filmlib.models import (ABLATIONS, DEPTHS, FiLMConfig, FiLMGenerator, FiLMModel, coord_maps, param_count,
                            preset, question_lengths)

VOCAB, ANSWERS = 93, 28  # CLEVR's question vocabulary (with the 4 special tokens) and answers


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a second thread waiting on a busy core slows
    every op several times over on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def questions(n, lengths, T=None, vocab=VOCAB, seed=0):
    """<START> w ... w <END> padded with 0; `lengths` counts <START> and <END>."""
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    q = torch.zeros(n, T, dtype=torch.long)
    for i, L in enumerate(lengths):
        q[i, 0], q[i, L - 1] = 1, 2
        q[i, 1:L - 1] = torch.randint(4, vocab, (L - 2,), generator=g)
    return q


def visual(cfg, n, seed=0):
    return torch.randn(n, *cfg.input_shape, generator=torch.Generator().manual_seed(seed))


def smoke(stem="pixels", **changes):
    return preset("smoke", VOCAB, ANSWERS, stem=stem).variant(**changes)


# --- sizes -------------------------------------------------------------------------------------

def test_paper_preset_parameter_counts():
    cfg = preset("paper", VOCAB, ANSWERS)
    with torch.device("meta"):  # sizes only: no memory, no init cost
        model = FiLMModel(cfg)
    total, gen = param_count(model), param_count(model.generator)
    # TARGETS.md: ~59.5M in all, ~57M of them the generator's
    assert abs(total - 59.5e6) < 0.1e6 and abs(gen - 57.0e6) < 0.1e6
    # and exactly the layers of the paper, counted by hand
    gru = 3 * (4096 * 200 + 4096 * 4096 + 2 * 4096)
    assert gen == VOCAB * 200 + gru + 4096 * 4 * 2 * 128 + 4 * 2 * 128
    stem = 1026 * 128 * 9 + 128 + 2 * 128
    blocks = 4 * (130 * 128 + 128 + 128 * 128 * 9 + 128)  # BN before FiLM has no affine
    classifier = 130 * 512 + 512 + 2 * 512 + 512 * 1024 + 1024 + 2 * 1024 + 1024 * ANSWERS + ANSWERS
    assert param_count(model.network) == stem + blocks + classifier
    assert cfg.map_size == 14 and cfg.input_shape == (1024, 14, 14)
    pixels = preset("paper", VOCAB, ANSWERS, stem="pixels")
    assert pixels.map_size == 14 and pixels.input_shape == (3, 224, 224)


def test_presets_shrink_widths_but_keep_the_architecture():
    paper, cpu, tiny = (preset(n, VOCAB, ANSWERS, stem="pixels") for n in ("paper", "cpu", "smoke"))
    for cfg in (cpu, tiny):
        assert (cfg.num_blocks, cfg.gamma, cfg.film_position, cfg.coords, cfg.residual) == (4, "1+delta", "after_bn", True, True)
        assert cfg.channels < paper.channels and cfg.rnn_dim < paper.rnn_dim
    assert 8 <= cpu.map_size <= 16
    model = FiLMModel(cpu)
    assert param_count(model) < 2e6
    assert model(visual(cpu, 2), questions(2, [6, 9])).shape == (2, ANSWERS)


# --- layer order -------------------------------------------------------------------------------

def record_calls(block):
    """Run hooks on a block's layers: [(name, input, output)] in call order."""
    calls, handles = [], []
    for name in ("conv1", "conv2", "bn", "film"):
        layer = getattr(block, name)
        if layer is not None:
            handles.append(layer.register_forward_hook(
                lambda m, inp, out, name=name: calls.append((name, inp[0], out))))
    return calls, handles


def test_paper_resblock_order_and_widths():
    cfg = preset("paper", VOCAB, ANSWERS).variant(rnn_dim=16, embed_dim=8)  # the network is the paper's
    model = FiLMModel(cfg)
    block = model.network.blocks[0]
    calls, _ = record_calls(block)
    seen = {}
    model.network.stem[0].register_forward_hook(lambda m, i, o: seen.update(stem=i[0].shape))
    model.network.classifier.project[0].register_forward_hook(lambda m, i, o: seen.update(cls=i[0].shape))
    out, feats = model(visual(cfg, 2), questions(2, [5, 8]), return_features=True)
    assert [c[0] for c in calls] == ["conv1", "conv2", "bn", "film"]
    (_, in1, out1), (_, in2, _), (_, _, bn_out), (_, film_in, _) = calls
    assert in1.shape == (2, 130, 14, 14) and out1.shape == (2, 128, 14, 14)  # [x + coords] 130 -> 128
    assert film_in is bn_out                                                 # FiLM reads BN's output
    assert torch.equal(in2, F.relu(out1))                                    # 1x1 conv -> ReLU -> 3x3
    assert not block.bn.affine and block.conv2.kernel_size == (3, 3)
    assert seen == {"stem": (2, 1026, 14, 14), "cls": (2, 130, 14, 14)}
    assert out.shape == (2, ANSWERS) and len(feats["blocks"]) == 4
    assert feats["classifier_map"].shape == (2, 512, 14, 14)
    torch.testing.assert_close(feats["pooled"], feats["classifier_map"].amax(dim=(2, 3)))


def test_resblock_computes_the_paper_formula():
    cfg = smoke()
    net = FiLMModel(cfg).network.eval()
    block = net.blocks[1]
    with torch.no_grad():  # give the BN non-trivial running statistics
        block.bn.running_mean.uniform_(-1, 1), block.bn.running_var.uniform_(0.5, 2)
    x, coords = torch.randn(2, 16, 8, 8), coord_maps(torch.zeros(2, 1, 8, 8))
    g, b = torch.randn(2, 16), torch.randn(2, 16)
    res = F.relu(block.conv1(torch.cat([x, coords], 1)))
    bn = (block.conv2(res) - block.bn.running_mean[:, None, None]) / torch.sqrt(block.bn.running_var[:, None, None] + block.bn.eps)
    expected = F.relu(g[:, :, None, None] * bn + b[:, :, None, None]) + res
    torch.testing.assert_close(block(x, g, b, coords), expected)


@pytest.mark.parametrize("position, order", [
    ("after_bn", ["conv1", "conv2", "bn", "film"]),
    ("after_conv2", ["conv1", "conv2", "film", "bn"]),
    ("before_conv1", ["film", "conv1", "conv2", "bn"]),
    ("after_relu2", ["conv1", "conv2", "bn", "film"]),
    ("after_residual", ["conv1", "conv2", "bn", "film"]),
])
def test_film_position(position, order):
    cfg = smoke(film_position=position)
    model = FiLMModel(cfg)
    block = model.network.blocks[0]
    calls, _ = record_calls(block)
    _, feats = model(visual(cfg, 3), questions(3, [4, 7, 5]), return_features=True)
    assert [c[0] for c in calls] == order
    film_in, film_out = calls[order.index("film")][1:]
    if position == "after_relu2":   # FiLM reads ReLU(BN(.)), before the residual sum
        assert torch.equal(film_in, F.relu(calls[2][2]))
    if position == "after_residual":  # FiLM's output is the block's output
        assert torch.equal(film_out, feats["blocks"][0])


def test_coordinate_maps():
    c = coord_maps(torch.zeros(2, 7, 3, 5))
    assert c.shape == (2, 2, 3, 5)
    torch.testing.assert_close(c[0, 0, 1], torch.linspace(-1, 1, 5))  # x varies along W
    torch.testing.assert_close(c[1, 1, :, 4], torch.linspace(-1, 1, 3))  # y varies along H


# --- the generator -----------------------------------------------------------------------------

def test_question_lengths():
    q = questions(3, [4, 7, 5], T=10)
    assert question_lengths(q).tolist() == [4, 7, 5]
    with pytest.raises(ValueError, match="all padding"):
        question_lengths(torch.zeros(2, 5, dtype=torch.long))


def test_generator_reads_the_state_at_the_last_real_token():
    cfg = smoke()
    gen = FiLMGenerator(cfg).eval()
    q = questions(3, [4, 9, 6])
    h = gen.encode(q)
    for i, L in enumerate([4, 9, 6]):  # the GRU run by hand on the real tokens only
        _, h_i = gen.rnn(gen.embed(q[i:i + 1, :L]))
        torch.testing.assert_close(h[i], h_i[-1, 0])
    # more padding (alone or batched with longer questions) changes nothing
    gammas, betas = gen(q)
    g2, b2 = gen(F.pad(q, (0, 11)))
    torch.testing.assert_close(gammas, g2), torch.testing.assert_close(betas, b2)
    g_alone, _ = gen(q[:1, :4])
    torch.testing.assert_close(g_alone[0], gammas[0])
    # a real token does change it
    q3 = q.clone()
    q3[0, 2] = 4 if q[0, 2] != 4 else 5
    assert not torch.allclose(gen(q3)[0][0], gammas[0])
    assert torch.allclose(gen(q3)[0][1:], gammas[1:])


@pytest.mark.parametrize("gamma, beta, g_value, b_value", [
    ("1+delta", "linear", 1.0, 0.0), ("linear", "linear", 0.0, 0.0), ("sigmoid", "zero", 0.5, 0.0),
    ("tanh", "linear", 0.0, 0.0), ("exp", "linear", 1.0, 0.0), ("one", "zero", 1.0, 0.0),
])
def test_generator_applies_the_parameterisation(gamma, beta, g_value, b_value):
    cfg = smoke(gamma=gamma, beta=beta)
    gen = FiLMGenerator(cfg)
    q = questions(2, [5, 6])
    with torch.no_grad():
        gen.proj.weight.zero_(), gen.proj.bias.zero_()  # raw outputs all 0
    gammas, betas = gen(q)
    assert gammas.shape == betas.shape == (2, 4, 16)
    assert torch.all(gammas == g_value) and torch.all(betas == b_value)
    with torch.no_grad():
        gen.proj.bias.fill_(-3.0)  # raw outputs all -3
    gammas, betas = gen(q)
    expected = {"1+delta": -2.0, "linear": -3.0, "sigmoid": 0.0474259, "tanh": -0.9950548,
                "exp": 0.0497871, "one": 1.0}[gamma]
    torch.testing.assert_close(gammas, torch.full_like(gammas, expected))
    torch.testing.assert_close(betas, torch.full_like(betas, -3.0 if beta == "linear" else 0.0))


def test_generator_output_layout():
    """One linear layer; per FiLM-ed block its outputs are [Δγ (C), β (C)], as the authors'."""
    cfg = smoke(film_blocks=(1, 3))
    gen = FiLMGenerator(cfg)
    assert [type(m).__name__ for m in gen.children()] == ["Embedding", "GRU", "Linear"]
    with torch.no_grad():
        gen.proj.weight.zero_()
        gen.proj.bias.copy_(torch.arange(2 * 2 * 16.0))
    gammas, betas = gen(questions(1, [5]))
    torch.testing.assert_close(gammas[0], 1 + torch.arange(64.0).view(2, 2, 16)[:, 0])
    torch.testing.assert_close(betas[0], torch.arange(64.0).view(2, 2, 16)[:, 1])


# --- ablations and depths ----------------------------------------------------------------------

TABLE2 = ["beta=0", "gamma=1", "gamma=sigmoid", "gamma=tanh", "gamma=exp", "film_after_residual",
          "film_after_relu2", "film_after_conv2", "film_before_conv1", "no_film_block4", "no_film_blocks3-4",
          "no_film_blocks2-4", "no_film_blocks1-4", "1x1_no_coords", "no_residual", "no_batchnorm", "raw_pixels"]


def one_step(cfg, n=4):
    torch.manual_seed(0)
    model = FiLMModel(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-5)
    before = [p.detach().clone() for p in model.network.parameters()]
    loss = F.cross_entropy(model(visual(cfg, n), questions(n, [4, 7, 5, 6][:n])), torch.arange(n) % ANSWERS)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.network.parameters()))
    return model


def test_ablations_cover_table2():
    assert list(ABLATIONS) == TABLE2
    assert DEPTHS == (1, 2, 3, 4, 5, 6, 7, 8, 12)


@pytest.mark.parametrize("stem", ["pixels", "features"])
@pytest.mark.parametrize("name", TABLE2)
def test_every_ablation_trains_a_step(name, stem):
    cfg = smoke(stem).ablation(name)
    model = one_step(cfg)
    filmed = [i for i, b in enumerate(model.network.blocks) if b.film is not None]
    assert tuple(filmed) == cfg.filmed
    gammas, betas = model.film_params(questions(2, [4, 6]))
    assert gammas.shape == betas.shape == (2, cfg.n_filmed, cfg.channels)
    assert (model.generator.proj is None) == (cfg.n_filmed == 0)
    # a block without FiLM keeps an ordinary (affine) BN; with FiLM the BN has none
    assert all(b.bn.affine == (b.film is None) for b in model.network.blocks if hasattr(b.bn, "affine"))


def test_ablation_settings():
    base = smoke()
    assert base.ablation("no_film_block4").filmed == (0, 1, 2)
    assert base.ablation("no_film_blocks2-4").filmed == (0,)
    assert base.ablation("no_film_blocks1-4").n_filmed == 0
    flat = FiLMModel(base.ablation("1x1_no_coords")).network
    assert all(b.conv2.kernel_size == (1, 1) and b.conv1.in_channels == 16 for b in flat.blocks)
    assert flat.classifier.project[0].in_channels == 16
    no_bn = FiLMModel(base.ablation("no_batchnorm")).network
    assert not any(isinstance(b.bn, torch.nn.BatchNorm2d) for b in no_bn.blocks)


@pytest.mark.parametrize("depth", DEPTHS)
def test_every_depth_trains_a_step(depth):
    model = one_step(smoke(num_blocks=depth), n=2)
    assert len(model.network.blocks) == depth and model.generator.proj.out_features == depth * 2 * 16


def test_features_stem_depths_build():
    for depth in DEPTHS:
        assert len(FiLMModel(smoke("features", num_blocks=depth)).network.blocks) == depth


def test_without_film_the_answer_ignores_the_question():
    for name, independent in [("no_film_blocks1-4", True), ("no_film_block4", False)]:
        cfg = smoke().ablation(name)
        model = FiLMModel(cfg).eval()
        v = visual(cfg, 3)
        a = model(v, questions(3, [4, 7, 5], seed=1))
        b = model(v, questions(3, [6, 5, 8], seed=2))
        assert torch.equal(a, b) == independent, name


# --- overrides, features, config --------------------------------------------------------------

def test_film_parameter_override():
    cfg = smoke()
    model = FiLMModel(cfg).eval()
    v, q = visual(cfg, 2), questions(2, [5, 7])
    gammas, betas = model.film_params(q)
    assert torch.equal(model(v, q), model(v, None, gammas=gammas, betas=betas))
    mean_beta = betas.mean(0, keepdim=True)  # (1, n_filmed, C): test-time ablation of β
    assert not torch.equal(model(v, q), model(v, q, betas=mean_beta))
    _, feats = model(v, q, gammas=gammas + 1, return_features=True)
    assert torch.equal(feats["gammas"], gammas + 1) and torch.equal(feats["betas"], betas)
    with pytest.raises(ValueError, match="gammas must have shape"):
        model(v, q, gammas=gammas[:, :2])
    with pytest.raises(ValueError, match="expected images"):
        model(torch.zeros(2, 1, 32, 32), q)


def test_classifier_pools_the_max_and_optionally_the_mean():
    cfg = smoke()
    assert cfg.classifier_pool == "max"                     # the paper's
    both = cfg.variant(classifier_pool="max+mean")
    model = FiLMModel(both).eval()
    assert model.network.classifier.mlp[0].in_features == 2 * both.classifier_channels
    v, q = visual(both, 3), questions(3, [5, 7, 4])
    logits, feats = model(v, q, return_features=True)
    fmap, pooled = feats["classifier_map"], feats["pooled"]
    P = both.classifier_channels
    assert pooled.shape == (3, 2 * P) and logits.shape == (3, ANSWERS)
    assert torch.equal(pooled[:, :P], fmap.amax(dim=(2, 3)))
    assert torch.allclose(pooled[:, P:], fmap.mean(dim=(2, 3)))
    assert torch.allclose(logits, model.network.classifier.mlp(pooled))
    assert param_count(model) - param_count(FiLMModel(cfg)) == P * both.classifier_hidden
    one_step(both, n=2)                                     # trains


def test_config_validation_and_round_trip():
    cfg = smoke(film_blocks=[2, 0])
    assert cfg.film_blocks == (0, 2)
    assert FiLMConfig.from_dict(cfg.to_dict()) == cfg
    for bad in [dict(stem="resnet"), dict(film_blocks=(4,)), dict(block_kernel=2), dict(gamma="relu"),
                dict(film_position="after_conv1"), dict(image_size=2, stem_layers=2), dict(classifier_pool="sum")]:
        with pytest.raises(ValueError, match="invalid FiLMConfig"):
            cfg.variant(**bad)
    with pytest.raises(KeyError):
        cfg.ablation("no_film")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("gpu", VOCAB, ANSWERS)
