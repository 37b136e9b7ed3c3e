"""filmlib.analysis on a smoke model: shapes, and that each intervention does what it says."""
import matplotlib
import numpy as np
import pytest
import torch

from filmlib import analysis
from filmlib.data.datasets import ClevrQuestionsDataset, collate
from filmlib.evaluate import predict
from filmlib.experiment import build_model, load_split
from filmlib.train import default_batch
from filmlib.data.datasets import make_loader

from test_experiment import prepared  # noqa: F401  (the module-scoped tiny dataset)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data(prepared):
    return prepared / "h5"


@pytest.fixture(scope="module")
def model(data):
    torch.manual_seed(0)
    m = build_model(data, "smoke", "pixels", num_blocks=3).eval()
    with torch.no_grad():                      # a generator whose γ, β vary visibly with the question
        m.generator.proj.weight.mul_(5)
    return m


@pytest.fixture(scope="module")
def val(data):
    return load_split(data, "val", "pixels")


@pytest.fixture(scope="module")
def params(model, data):
    return analysis.collect(model, ClevrQuestionsDataset(data / "val_questions.h5", None), batch_size=7)


def test_collect_matches_the_generator_row_for_row(model, val, params):
    n, K, C = len(val), model.cfg.n_filmed, model.cfg.channels
    assert params.gammas.shape == params.betas.shape == (n, K, C)
    assert params.blocks == (0, 1, 2)
    batch = collate([val[i] for i in range(n)])
    g, b = model.film_params(batch["questions"])
    np.testing.assert_allclose(params.gammas, g.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params.betas, b.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert (params.meta["question_index"] == batch["question_indices"].numpy()).all()
    assert (params.meta["final_function"] == batch["final_functions"].numpy()).all()
    assert set(params.final_function_names) <= set(analysis.params.FINAL_FUNCTIONS)
    assert len(analysis.collect(model, val, max_questions=5)) == 5


def test_param_summary_counts_negatives_per_layer_and_pooled(params):
    rows = analysis.param_summary(params)
    assert [r["layer"] for r in rows] == ["block 1", "block 2", "block 3", "all"]
    assert rows[1]["gamma_negative"] == pytest.approx(float((params.gammas[:, 1] < 0).mean()))
    assert rows[-1]["beta_negative"] == pytest.approx(float((params.betas < 0).mean()))
    assert rows[-1]["gamma_min"] == pytest.approx(float(params.gammas.min()))
    assert 0 < rows[-1]["beta_negative"] < 1          # a random generator gives both signs


def _spy(model):
    """Record the γ and β the FiLM-ed network receives."""
    seen = []
    handle = model.network.register_forward_pre_hook(lambda mod, args: seen.append((args[1], args[2])))
    return seen, handle


def test_mean_replacement_really_replaces_gamma_and_keeps_beta(model, val, params):
    g_mean, b_mean = params.mean()
    assert g_mean.shape == (1, model.cfg.n_filmed, model.cfg.channels)
    seen, handle = _spy(model)
    try:
        analysis.accuracies(model, val, {"g": analysis.replace_with(gamma=g_mean)}, batch_size=16)
    finally:
        handle.remove()
    questions = collate([val[i] for i in range(len(val))])["questions"]
    _, betas = model.film_params(questions)
    got_g = torch.cat([g for g, _ in seen])
    got_b = torch.cat([b for _, b in seen])
    assert torch.equal(got_g, g_mean.expand_as(got_g))
    torch.testing.assert_close(got_b, betas)


def test_noise_with_sigma_zero_changes_nothing_and_noise_is_seeded(model, val):
    base = analysis.accuracies(model, val, {"as trained": None})["as trained"]
    loader = make_loader(val, 16)
    pred = predict(model, loader, batch_fn=default_batch)
    assert base == pytest.approx(float((pred["prediction"] == pred["answer"]).mean()))
    rows = analysis.noise_curve(model, val, [0.0, 50.0])
    assert [(r["sigma"], r["target"]) for r in rows][:3] == [(0.0, "gamma"), (0.0, "beta"), (0.0, "both")]
    assert all(r["accuracy"] == base for r in rows if r["sigma"] == 0)
    again = analysis.noise_curve(model, val, [0.0, 50.0])
    assert rows == again
    g = torch.zeros(2, 3, 4)
    gen = torch.Generator().manual_seed(0)
    ng, nb = analysis.add_noise(1.0, "gamma")(g, g, gen)
    assert not torch.equal(ng, g) and torch.equal(nb, g)
    with pytest.raises(ValueError, match="to='gama'"):
        analysis.add_noise(1.0, "gama")


def test_mean_ablations_names_the_paper_rows(model, val, params):
    acc = analysis.mean_ablations(model, val, params, max_questions=10)
    assert list(acc) == ["as trained", "γ := train mean", "β := train mean"]
    assert all(0 <= v <= 1 for v in acc.values())


def test_pooled_sources_are_the_argmax_cells_of_the_classifier_map(model, val):
    batch = collate([val[i] for i in range(6)])
    heat = analysis.pooled_sources(model, batch["visual"], batch["questions"])
    _, feats = model(batch["visual"], batch["questions"], return_features=True)
    fmap = feats["classifier_map"]
    N, P, H, W = fmap.shape
    assert heat.shape == (N, H, W)
    torch.testing.assert_close(heat.sum((1, 2)), torch.ones(N))
    flat = fmap[0].flatten(1)                            # (P, H*W)
    positive = flat.amax(1) > 0                          # a map zero everywhere has no argmax to count
    expected = torch.bincount(flat[positive].argmax(1), minlength=H * W).float() / positive.sum()
    torch.testing.assert_close(heat[0].flatten(), expected)


class _Maps(torch.nn.Module):
    """A stand-in whose classifier maps are given: map 0 zero everywhere (as after a ReLU)."""
    def __init__(self, fmap):
        super().__init__()
        self.fmap = fmap

    def forward(self, visual, questions, gammas=None, betas=None, return_features=False):
        return None, {"classifier_map": self.fmap}


def test_maps_that_are_zero_everywhere_are_not_counted_at_the_first_cell():
    fmap = torch.zeros(2, 3, 2, 2)
    fmap[0, 1, 1, 1], fmap[0, 2, 0, 1] = 2.0, 1.0        # sample 0: maps 1 and 2 positive, map 0 all zero
    heat = analysis.pooled_sources(_Maps(fmap), torch.zeros(2, 1), None)
    torch.testing.assert_close(heat[0], torch.tensor([[0.0, 0.5], [0.0, 0.5]]))
    assert heat[1].sum() == 0                             # nothing positive: no cell is credited
    ax = analysis.overlay(np.zeros((40, 60, 3), np.uint8), heat[0])
    assert ax.images[1].get_extent() == [0, 60, 40, 0]


def test_tsne_rows_are_the_questions_they_name(params, monkeypatch):
    import sklearn.manifold
    captured = {}
    real = sklearn.manifold.TSNE

    class Spy(real):
        def fit_transform(self, x, *a, **k):
            captured["x"] = x
            return super().fit_transform(x, *a, **k)
    monkeypatch.setattr(sklearn.manifold, "TSNE", Spy)
    pts = analysis.tsne_points(params, layer=-1, max_points=25, seed=1)
    rows = pts["rows"]
    assert len(rows) == len(set(rows)) == min(25, len(params)) and pts["xy"].shape == (len(rows), 2)
    assert (pts["question_index"] == params.meta["question_index"][rows]).all()
    expected = np.concatenate([params.gammas[rows, -1], params.betas[rows, -1]], axis=1)
    np.testing.assert_array_equal(captured["x"], expected)
    assert pts["block"] == 2
    analysis.plot_tsne(pts)
    with pytest.raises(ValueError, match="3 FiLM layers"):
        analysis.tsne_points(params, layer=3)


def test_interpolation_ends_at_each_questions_own_answer_distribution(model, val):
    a, b = val[0], val[3]
    probs = analysis.interpolate(model, a["visual"], a["questions"], b["questions"], steps=11)
    assert probs.shape == (11, model.cfg.num_answers)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    with torch.no_grad():
        ends = [torch.softmax(model(a["visual"][None], q["questions"][None]), 1)[0].numpy() for q in (a, b)]
    np.testing.assert_allclose(probs[0], ends[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs[-1], ends[1], rtol=1e-4, atol=1e-6)


def test_plots_draw(params):
    axes = analysis.plot_histograms(params, bins=20)
    assert "negative" in axes[0].get_title()
    analysis.plot_gamma_beta(params, layer=1, channels=[0, 1])
