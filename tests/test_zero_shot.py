"""filmlib.analysis.zero_shot: the swap questions built from hand-made programs, and the method
run on a tiny CoGenT condition-B split."""
import json

import pytest
import torch

from filmlib import analysis
from filmlib.analysis.arithmetic import _worked_examples, filter_pairs, seen_color, unseen_pair
from filmlib.data import clevr
from filmlib.data.datasets import ClevrQuestionsDataset
from filmlib.data.preprocess import preprocess_root
from filmlib.data.vocab import Vocab
from filmlib.experiment import build_model
from filmlib.synth.attributes import COGENT
from filmlib.synth.generate import SplitSpec, generate_split


def node(fn, inputs=(), value=None):
    return {"function": fn, "inputs": list(inputs), "value_inputs": [] if value is None else [value]}


# "What is the blue big cylinder made of?" (the paper's Figure 10 example)
BLUE_CYLINDER = [node("scene"), node("filter_size", [0], "large"), node("filter_color", [1], "blue"),
                 node("filter_shape", [2], "cylinder"), node("unique", [3]), node("query_material", [4])]


def test_pairs_follow_filter_chains():
    assert filter_pairs(BLUE_CYLINDER) == [("blue", "cylinder")]
    two = [node("scene"), node("filter_color", [0], "red"), node("filter_shape", [1], "cube"), node("exist", [2]),
           node("scene"), node("filter_color", [4], "gray"), node("count", [5]),
           node("scene"), node("filter_shape", [7], "cylinder"), node("filter_material", [8], "metal"),
           node("filter_color", [9], "cyan"), node("count", [10])]
    assert filter_pairs(two) == [("red", "cube"), ("cyan", "cylinder")]
    # a colour in one chain and a shape in another are not a pair
    split = [node("scene"), node("filter_color", [0], "blue"), node("unique", [1]), node("relate", [2], "left"),
             node("filter_shape", [3], "cylinder"), node("count", [4])]
    assert filter_pairs(split) == [] and unseen_pair(split) is None


def test_the_papers_example_is_rebuilt():
    s = analysis.swap_questions("What is the blue big cylinder made of?", BLUE_CYLINDER)
    assert s["pair"] == ("blue", "cylinder") and s["color"] == "green"
    assert s["swap_shape"] == "What is the blue big sphere made of".split()
    assert s["swap_color"] == "What is the green big cylinder made of".split()
    assert s["swap_both"] == "What is the green big sphere made of".split()
    assert ("green", "cylinder") == (s["color"], "cylinder") and "green" in COGENT["A"]["cylinder"]


def test_plurals_synonyms_and_materials_between():
    prog = [node("scene"), node("filter_color", [0], "red"), node("filter_material", [1], "metal"),
            node("filter_shape", [2], "cube"), node("count", [3])]
    s = analysis.swap_questions("How many red shiny blocks are there?", prog)
    assert s["swap_shape"] == "How many red shiny balls are there".split()
    assert s["swap_color"] == "How many gray shiny blocks are there".split()
    assert s["swap_both"] == "How many gray shiny balls are there".split()
    assert seen_color("red", "cube") == "gray" and all(
        seen_color(c, sh) in COGENT["A"][sh] for sh in ("cube", "cylinder") for c in COGENT["B"][sh])


def test_where_the_method_does_not_apply():
    seen = [node("scene"), node("filter_color", [0], "gray"), node("filter_shape", [1], "cube"), node("count", [2])]
    assert analysis.swap_questions("How many gray cubes are there?", seen) is None     # seen in A
    assert unseen_pair(seen, "B") == ("gray", "cube")                                  # but not in B
    sphere = [node("scene"), node("filter_color", [0], "red"), node("filter_shape", [1], "sphere"), node("count", [2])]
    assert analysis.swap_questions("How many red spheres are there?", sphere) is None
    two_unseen = [node("scene"), node("filter_color", [0], "red"), node("filter_shape", [1], "cube"), node("count", [2]),
                  node("scene"), node("filter_color", [4], "blue"), node("filter_shape", [5], "cylinder"),
                  node("count", [6]), node("equal_integer", [3, 7])]
    assert analysis.swap_questions("Are there as many red cubes as blue cylinders?", two_unseen) is None
    # the program names the pair but the text does not say it (a paraphrase, say)
    assert analysis.swap_questions("What is the sky-coloured big tube made of?", BLUE_CYLINDER) is None


@pytest.fixture(scope="module")
def cogent_b(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogent")
    for split, n in (("train", 12), ("val", 12)):
        generate_split(root / "raw", SplitSpec(split=split, num_images=n, questions_per_image=10, width=60,
                                               height=40, seed=7, cogent="B"), progress=False)
    preprocess_root(root / "raw", root / "h5", splits=("trainB", "valB"), image_size=(32, 32), vocab_split="trainB")
    return root


def test_zero_shot_on_a_condition_b_split(cogent_b):
    h5 = cogent_b / "h5"
    vocab = Vocab.load(h5 / "vocab.json")
    torch.manual_seed(0)
    model = build_model(h5, "smoke", "pixels").eval()
    val = ClevrQuestionsDataset(h5 / "valB_questions.h5", h5 / "valB_images.h5")
    records = {q["question_index"]: q for q in clevr.load_questions(clevr.questions_path(cogent_b / "raw", "valB"))}
    got = analysis.zero_shot(model, val, records, vocab, examples=3)
    assert got["questions"] == len(val) and 0 < got["applies_to"] < len(val)
    expected = sum(analysis.swap_questions(records[int(i)]["question"], records[int(i)]["program"]) is not None
                   for i in val.orig_idxs)
    assert got["applies_to"] == expected and got["share"] == pytest.approx(expected / len(val))
    assert 0 <= got["accuracy_before"] <= 1 and 0 <= got["accuracy_after"] <= 1
    ex = got["examples"][0]
    assert len(got["examples"]) == 3 and ex["swap_shape"] != ex["question"]
    n = got["applies_to"]
    assert got["fixed"] - got["broke"] == round((got["accuracy_after"] - got["accuracy_before"]) * n)
    assert got["fixed"] + got["broke"] <= n
    for ex in got["examples"]:
        right = (ex["before"] == ex["answer"], ex["after"] == ex["answer"])
        assert ex["effect"] == {(False, True): "fixed", (True, False): "broke"}.get(right, "unchanged")
    json.dumps(got)                                       # plain types only
    none = analysis.zero_shot(model, val, records, vocab, rows=[])
    assert none["applies_to"] == 0 and (none["fixed"], none["broke"], none["p_value"]) == (0, 0, None)


def test_worked_examples_show_fixed_then_broken_answers():
    def made(effect, k):
        return [{"effect": effect, "i": i} for i in range(k)]

    def effects(fixed, broke, unchanged, n=5):
        shown = {"fixed": made("fixed", fixed), "broke": made("broke", broke), "unchanged": made("unchanged", unchanged)}
        return [e["effect"] for e in _worked_examples(shown, n)]

    assert effects(5, 5, 5) == ["fixed"] * 4 + ["broke"]                 # a third of 5 (1) broken
    assert effects(1, 5, 5) == ["fixed"] + ["broke"] * 4                 # too few fixed: more broken
    assert effects(1, 1, 5) == ["fixed", "broke"] + ["unchanged"] * 3    # then unchanged ones fill
    assert effects(0, 0, 2) == ["unchanged"] * 2                         # never more than there are
