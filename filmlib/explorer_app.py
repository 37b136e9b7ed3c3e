"""The explorer as a set of ipywidgets (notebook 08); the answering is :mod:`filmlib.explorer`.

:class:`ExplorerApp` lays out: the scene (a fresh one from a seed and an object count, or one of a
split's images), an object editor (colour, shape, material, size of one object, drawn again),
the question box (type anything, or pick one of the template questions about the scene), one
pair of dials per FiLM-ed block (how much of its γ and β to keep), and the output: the answer,
the top answers' probabilities, unknown words, the program of a template question, the image
with the pooled-feature heat map, and each block's γ and β. Everything updates when a control
changes. Its methods (:meth:`ExplorerApp.ask`, :meth:`new_scene`...) drive it from code too.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .explorer import Explorer, edit_object, new_scene, program_text, template_questions


def plot_answer(image: np.ndarray, answer, blocks, fig=None):
    """One figure: the image with the heat map, the top answers, and each block's γ and β
    (one row per block, one column per feature map)."""
    import matplotlib.pyplot as plt
    from .analysis.localisation import overlay
    if fig is None:
        fig = plt.figure(figsize=(12, 3.6), layout="constrained")
    grid = fig.add_gridspec(2, 3, width_ratios=(1.3, 0.8, 1.6))
    overlay(image, answer.heat, ax=fig.add_subplot(grid[:, 0]))
    ax = fig.add_subplot(grid[:, 1])
    names, probs = zip(*answer.top)
    ax.barh(range(len(names)), probs, color=["C2"] + ["C0"] * (len(names) - 1))
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="probability", title=f"answer: {answer.prediction}")
    labels = [f"block {b + 1}" for b in blocks]
    for row, (values, name, cmap, centre) in enumerate(((answer.gammas, "γ", "RdBu_r", 1.0),
                                                         (answer.betas, "β", "PuOr_r", 0.0))):
        ax = fig.add_subplot(grid[row, 2])
        span = max(float(np.abs(values - centre).max()), 1e-6)
        im = ax.imshow(values, aspect="auto", cmap=cmap, vmin=centre - span, vmax=centre + span,
                       interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"{name} of each feature map" + (" (white: 1)" if name == "γ" else " (white: 0)"), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
    return fig


class ExplorerApp:
    """The widgets (``app.widget`` to display) around an :class:`~filmlib.explorer.Explorer`.

    ``root``/``split``: a SynthCLEVR or CLEVR folder whose images (and template questions with
    programs) can be picked instead of fresh scenes; None: fresh scenes only."""

    def __init__(self, explorer: Explorer, *, root=None, split: str = "val", seed: int = 0,
                 width: int = 240, height: int = 160):
        import ipywidgets as w
        from .synth.attributes import ATTRIBUTES
        self.ex, self.root, self.split, self.size = explorer, None if root is None else Path(root), split, (width, height)
        self._split_questions = None
        self._templates: dict[str, dict] = {}
        sources = ["fresh scene"] + (["a " + split + " image"] if self._has_split() else [])
        self.source = w.Dropdown(options=sources, value=sources[0], description="scene", layout=w.Layout(width="240px"))
        self.seed = w.BoundedIntText(value=seed, min=0, max=10**9, description="seed / index")
        self.objects = w.IntSlider(value=6, min=3, max=10, description="objects")
        self.draw = w.Button(description="draw", icon="refresh")
        self.obj = w.Dropdown(options=[], description="object")
        self.attr = {name: w.Dropdown(options=("–",) + values, value="–", description=name, layout=w.Layout(width="190px"))
                     for name, values in ATTRIBUTES.items()}
        self.apply = w.Button(description="apply", tooltip="apply to the object", layout=w.Layout(width="80px"))
        self.templates = w.Dropdown(options=[], description="templates", layout=w.Layout(width="95%"))
        self.question = w.Text(value="", placeholder="type a question and press Enter", description="question",
                               layout=w.Layout(width="95%"), continuous_update=False)
        self.ask_button = w.Button(description="ask", button_style="primary")
        self.dials = {b: (w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.1, description=f"γ block {b + 1}",
                                        continuous_update=False),
                          w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.1, description=f"β block {b + 1}",
                                        continuous_update=False))
                      for b in explorer.blocks}
        self.status = w.HTML()
        self.out = w.Output()
        self.scene = None
        self.image = None
        self.answer = None
        self.draw.on_click(lambda _: self.new_scene())
        self.apply.on_click(lambda _: self.edit())
        self.templates.observe(self._pick_template, names="value")
        self.question.observe(lambda ch: self.ask(), names="value")
        self.ask_button.on_click(lambda _: self.ask())
        for g, b in self.dials.values():
            g.observe(lambda ch: self.ask(), names="value")
            b.observe(lambda ch: self.ask(), names="value")
        dials = w.VBox([w.HTML("<b>How much of each block's modulation to keep</b> (0: none, γ = 1 and β = 0; "
                               "1: as predicted)")] + [w.HBox(list(pair)) for pair in self.dials.values()])
        self.widget = w.VBox([
            w.HBox([self.source, self.seed, self.objects, self.draw]),
            w.HBox([self.obj, *self.attr.values(), self.apply]),
            self.templates, w.HBox([self.question, self.ask_button]), dials, self.status, self.out])
        self.new_scene()

    # --- scenes --------------------------------------------------------------------------
    def _has_split(self) -> bool:
        from .data import clevr
        return self.root is not None and clevr.questions_path(self.root, self.split).is_file()

    def new_scene(self, seed: int | None = None):
        """Draw a fresh scene (or load image ``seed`` of the split) and ask the question again."""
        from PIL import Image

        from .data import clevr
        if seed is not None:
            self.seed.value = seed
        if self.source.value == "fresh scene":
            self.scene = new_scene(int(self.seed.value), objects=int(self.objects.value), width=self.size[0],
                                   height=self.size[1])
            self.image, record = self.scene.image, self.scene.record
            questions = template_questions(record, k=10, seed=int(self.seed.value))
        else:
            index = int(self.seed.value)
            self.scene = None
            self.image = np.asarray(Image.open(clevr.image_path(self.root, self.split, index)).convert("RGB"))
            record = {"objects": []}
            questions = [q for q in self._questions_of_split() if q["image_index"] == index]
        self._set_objects(record)
        self.obj.disabled = self.apply.disabled = self.scene is None
        self._set_templates(questions)
        self._visual = self.ex.visual(self.image)
        if not self.question.value and questions:
            self.question.value = questions[0]["question"]        # asks
        else:
            self.ask()

    def _set_objects(self, record: dict):
        chosen = self.obj.value
        self.obj.options = [(f"{i}: {o['size']} {o['color']} {o['material']} {o['shape']}", i)
                            for i, o in enumerate(record["objects"])]
        if self.obj.options:
            self.obj.value = chosen if chosen is not None and chosen < len(self.obj.options) else 0

    def _set_templates(self, questions: list[dict]):
        """The template questions of the scene, by their text (a typed question that matches one
        shows its program and true answer)."""
        self._templates = {q["question"]: q for q in questions}
        self.templates.options = [("(type your own)", "")] + [(text, text) for text in self._templates]
        self.templates.value = ""

    def _questions_of_split(self) -> list[dict]:
        from .data import clevr
        if self._split_questions is None:
            self._split_questions = clevr.load_questions(clevr.questions_path(self.root, self.split))
        return self._split_questions

    def edit(self, index: int | None = None, **attributes):
        """Change one object of a fresh scene (default: the editor's choices) and ask again."""
        if self.scene is None:
            return
        index = self.obj.value if index is None else index
        attributes = attributes or {k: d.value for k, d in self.attr.items() if d.value != "–"}
        if index is None or not attributes:
            return
        self.scene = edit_object(self.scene, int(index), **attributes)
        self.image = self.scene.image
        record = self.scene.record
        self._set_objects(record)
        self._set_templates(template_questions(record, k=10, seed=int(self.seed.value)))
        self._visual = self.ex.visual(self.image)
        self.ask()

    def _pick_template(self, change):
        if change["new"]:
            self.question.value = change["new"]

    # --- answering -------------------------------------------------------------------------
    def ask(self, question: str | None = None):
        """Answer the question box's question (or ``question``, put into the box) and redraw."""
        import matplotlib.pyplot as plt
        from IPython.display import display
        if question is not None and question != self.question.value:
            self.question.value = question                         # observe() calls back here
            return self.answer
        text = self.question.value.strip()
        if not text:
            return None
        keep_g = {b: g.value for b, (g, _) in self.dials.items() if g.value != 1.0}
        keep_b = {b: bb.value for b, (_, bb) in self.dials.items() if bb.value != 1.0}
        self.answer = self.ex.ask(self._visual, text, keep_gamma=keep_g, keep_beta=keep_b)
        template = self._templates.get(text)
        lines = [f"<span class='filmlib-question'>{html.escape(text)}</span>",
                 f"<b>FiLM's answer: <span class='filmlib-answer'>{self.answer.prediction}</span></b> "
                 f"({100 * self.answer.top[0][1]:.0f}%)"]
        if template is not None:
            lines.append(f"template question; true answer: <b>{template.get('answer')}</b>"
                         + (f"; program: <code>{program_text(template['program'])}</code>" if template.get("program") else ""))
        if self.answer.unknown:
            lines.append("<span style='color:#b00'>words the model has never seen (read as &lt;UNK&gt;): "
                         + html.escape(", ".join(self.answer.unknown)) + "</span>")
        if keep_g or keep_b:
            lines.append("dialled: " + ", ".join([f"γ block {b + 1} × {k:g}" for b, k in keep_g.items()]
                                                 + [f"β block {b + 1} × {k:g}" for b, k in keep_b.items()]))
        self.status.value = "<br>".join(lines)
        self.out.clear_output(wait=True)
        with self.out:
            fig = plot_answer(self.image, self.answer, self.ex.blocks)
            display(fig)
            plt.close(fig)
        return self.answer
