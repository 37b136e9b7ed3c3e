"""Evaluation grouping on a hand-made predictions set."""
import json

import numpy as np
import pytest
import torch

from filmlib.data.clevr import FINAL_FUNCTIONS, QUESTION_TYPES
from filmlib.evaluate import PAPER_TABLE1, accuracy_report, count_off_by_one, table1_markdown, write_predictions

ANSWERS = ["<NULL>", "<START>", "<END>", "<UNK>", "0", "1", "2", "3", "no", "red", "yes"]
T = {t: i for i, t in enumerate(QUESTION_TYPES)}
FF = {f: i for i, f in enumerate(FINAL_FUNCTIONS)}
A = {a: i for i, a in enumerate(ANSWERS)}


@pytest.fixture
def pred():
    rows = [  # (prediction, answer, type, final function, family)
        ("1", "2", "count", "count", 0),       # off by one
        ("3", "1", "count", "count", 0),       # off by two
        ("2", "2", "count", "count", 0),
        ("yes", "yes", "exist", "exist", 1),
        ("no", "yes", "exist", "exist", 1),
        ("red", "red", "query_attribute", "query_color", 3),
        ("yes", "no", "compare_numbers", "less_than", 68),
        ("no", "no", "compare_attribute", "equal_color", 78),
    ]
    out = {"prediction": np.array([A[r[0]] for r in rows]), "answer": np.array([A[r[1]] for r in rows]),
           "type": np.array([T[r[2]] for r in rows]), "final_function": np.array([FF[r[3]] for r in rows]),
           "family": np.array([r[4] for r in rows])}
    # one test-split question without an answer: ignored
    for k, v in {"prediction": A["yes"], "answer": -1, "type": 0, "final_function": 0, "family": 0}.items():
        out[k] = np.append(out[k], v)
    return out


def test_grouping(pred):
    r = accuracy_report(pred, ANSWERS)
    assert r["questions"] == 8 and r["overall"] == pytest.approx(4 / 8)
    assert r["by_type"] == pytest.approx({"count": 1 / 3, "exist": 0.5, "query_attribute": 1.0,
                                          "compare_numbers": 0.0, "compare_attribute": 1.0})
    assert r["by_final_function"]["count"] == pytest.approx(1 / 3)
    assert r["by_final_function"]["query_shape"] is None
    assert r["by_family"] == pytest.approx({0: 1 / 3, 1: 0.5, 3: 1.0, 68: 0.0, 78: 1.0})
    assert r["count_off_by_one"] == pytest.approx(0.5)


def test_off_by_one_none_without_count_errors(pred):
    keep = pred["type"] != T["count"]
    assert count_off_by_one({k: v[keep] for k, v in pred.items()}, ANSWERS) is None


def test_predictions_file_and_table(pred, tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", pred, ANSWERS)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[0] == {"prediction": "1", "answer": "2", "type": 0, "final_function": 0, "family": 0}
    assert rows[-1]["answer"] is None
    md = table1_markdown({"FiLM": accuracy_report(pred, ANSWERS)})
    lines = md.splitlines()
    assert lines[2].startswith("| FiLM (ours) | SynthCLEVR | 50.0 | 33.3 | 50.0 | 0.0 | 100.0 | 100.0 |")
    assert lines[3] == "| CNN+GRU+FiLM (paper) | CLEVR v1.0 test | " + " | ".join(
        f"{v:.1f}" for v in PAPER_TABLE1["CNN+GRU+FiLM"]) + " |"


def test_image_reliance_separates_image_readers_from_question_readers():
    from filmlib.evaluate import image_reliance

    class ReadsImage(torch.nn.Module):      # answers with the argmax of the image's 4 channels
        def forward(self, visual, questions):
            return visual.mean((2, 3))

    class ReadsQuestion(torch.nn.Module):   # answers with the question's first token
        def forward(self, visual, questions):
            return torch.nn.functional.one_hot(questions[:, 0], 4).float()

    scenes = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1, 2])
    answers = scenes.clone()
    batch = {"visual": torch.nn.functional.one_hot(scenes, 4).float()[:, :, None, None].expand(-1, -1, 2, 2),
             "questions": answers[:, None].clone(), "answers": answers, "image_indices": scenes}
    fn = lambda b: (b["visual"], b["questions"], b["answers"])  # noqa: E731
    r = image_reliance(ReadsImage(), [batch], batch_fn=fn)
    assert r == {"own_images": 1.0, "other_images": 0.0, "questions": 10}   # never its own scene
    r = image_reliance(ReadsQuestion(), [batch], batch_fn=fn)
    assert r["own_images"] == r["other_images"] == 1.0
    with pytest.raises(ValueError, match="two different scenes"):
        image_reliance(ReadsImage(), [{**batch, "image_indices": torch.zeros(10, dtype=torch.long)}], batch_fn=fn)
