"""filmlib.explorer_app: the widgets answer, flag unknown words, follow the dials and the object
editor, and read a split's images with their template questions."""
import matplotlib
import pytest

from filmlib.explorer import Explorer
from filmlib.explorer_app import ExplorerApp

from test_experiment import prepared  # noqa: F401  (the module-scoped tiny dataset)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def explorer():
    return Explorer.from_shipped()


def test_the_app_answers_what_is_typed(explorer):
    app = ExplorerApp(explorer, seed=4, width=120, height=80)
    assert app.answer is not None and "FiLM's answer" in app.status.value      # a template question, asked
    assert "program:" in app.status.value and "true answer" in app.status.value
    app.question.value = "How many zebras are there?"                          # typing (Enter) asks
    assert "zebras" in app.status.value and app.answer.unknown == ["zebras"]
    a = app.ask("Is there a red thing?")
    assert a.question == "Is there a red thing?" and app.question.value == "Is there a red thing?"
    assert f">{a.prediction}<" in app.status.value


def test_dials_objects_and_scenes_update_the_answer(explorer):
    app = ExplorerApp(explorer, seed=2, width=120, height=80)
    app.ask("What color is the large metal thing?")
    g, b = app.dials[explorer.blocks[0]]
    g.value = 0.0
    assert "γ block 1 × 0" in app.status.value
    assert (app.answer.gammas[0] == 1).all()
    before = app.image.copy()
    colour = "red" if app.scene.record["objects"][0]["color"] != "red" else "blue"
    app.edit(0, color=colour)
    assert app.scene.record["objects"][0]["color"] == colour and colour in app.obj.options[0][0]
    assert (app.image != before).any()
    app.new_scene(seed=9)
    assert app.seed.value == 9 and app.answer is not None


def test_the_app_reads_a_splits_images_and_their_questions(explorer, prepared):
    app = ExplorerApp(explorer, root=prepared / "raw", split="val", width=120, height=80)
    assert app.source.options[-1] == "a val image"
    app.source.value = "a val image"
    app.new_scene(seed=1)
    assert len(app.templates.options) > 1 and app.obj.disabled
    app.templates.value = app.templates.options[1][1]
    assert "true answer" in app.status.value
