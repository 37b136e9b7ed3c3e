"""The explorer's engine (notebook 08): one scene, any typed question, and what FiLM does with it.

:class:`Explorer` holds a FiLM model, the perception CNN whose maps it reads (or none, for a
pixel-stem model) and the vocabulary. :meth:`Explorer.ask` answers a question about an image:
the top answers with their probabilities, the words the model has no embedding for, the γ and
β of every FiLM-ed block, and where the max-pooled features come from (Fig 4). Each block's
modulation can be dialled between removed (γ = 1, β = 0: ``keep = 0``) and as predicted
(``keep = 1``). Scenes come from SynthCLEVR's generator (:func:`new_scene`, drawn from a seed,
objects editable with :func:`edit_object`) or from any image file; :func:`template_questions`
asks the template engine for questions about a scene, with their programs and answers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from .analysis.localisation import pooled_sources
from .data.features import normalize_images
from .data.preprocess import resize_image
from .data.vocab import Vocab, tokenize


@dataclass
class Scene:
    """A generated scene: its record (objects, relationships...), the camera and lights it was
    drawn with, and its (H, W, 3) uint8 image."""
    record: dict
    image: np.ndarray
    camera: object = field(repr=False)
    lights: list = field(repr=False)


def new_scene(seed: int, *, objects: int | None = None, width: int = 240, height: int = 160,
              cogent: str | None = None) -> Scene:
    """A fresh SynthCLEVR scene drawn from ``seed`` (with exactly ``objects`` objects, 3..10)."""
    from .synth.camera import sample_camera
    from .synth.render import sample_lights
    from .synth.scene import make_scene
    if objects is not None and not 3 <= objects <= 10:
        raise ValueError(f"objects={objects}: a CLEVR scene has 3 to 10 objects")
    rng = np.random.default_rng([seed, 8])
    camera, lights = sample_camera(rng, width, height), sample_lights(rng)
    record, image = make_scene(rng, width=width, height=height, split="explorer", image_index=seed, cogent=cogent,
                               min_objects=objects or 3, max_objects=objects or 10, camera=camera, lights=lights)
    return Scene(record, image, camera, lights)


def edit_object(scene: Scene, index: int, **attributes) -> Scene:
    """The scene with object ``index``'s ``color``, ``shape``, ``material`` or ``size`` changed,
    drawn again from the same camera and lights (positions kept)."""
    from .synth.attributes import ATTRIBUTES
    from .synth.render import render_scene
    from .synth.scene import _with_pixel_coords, compute_relationships
    objects = [dict(o) for o in scene.record["objects"]]
    if not 0 <= index < len(objects):
        raise IndexError(f"object {index}: the scene has {len(objects)} objects")
    for name, value in attributes.items():
        if name not in ATTRIBUTES or value not in ATTRIBUTES[name]:
            raise ValueError(f"{name}={value!r}: expected one of {ATTRIBUTES.get(name, tuple(ATTRIBUTES))}")
        objects[index][name] = value
    if "size" in attributes:                      # the object rests on the floor at its new size
        from .synth.attributes import half_extent
        o = objects[index]
        o["3d_coords"] = [*o["3d_coords"][:2], half_extent(o["shape"], o["size"])]
    image = render_scene(objects, scene.camera, scene.lights).image
    objects = _with_pixel_coords(objects, scene.camera)
    record = {**scene.record, "objects": objects,
              "relationships": compute_relationships(objects, scene.record["directions"])}
    return replace(scene, record=record, image=image)


def template_questions(scene_record: dict, k: int = 10, seed: int = 0) -> list[dict]:
    """Up to ``k`` template questions about a scene (each of a different family), with their
    programs and answers, from SynthCLEVR's question engine."""
    from .synth.questions import QuestionEngine
    engine = QuestionEngine(random.Random(f"explorer:{seed}"))
    return [{"question": q.text, "answer": q.answer, "program": q.program}
            for q in engine.questions_for_scene(scene_record, k)]


def program_text(program: list[dict]) -> str:
    """A program on one line: ``scene → filter_color[red] → ... → count``."""
    return " → ".join(n["function"] + (f"[{', '.join(n['value_inputs'])}]" if n.get("value_inputs") else "")
                      for n in program)


@dataclass
class Answer:
    """What :meth:`Explorer.ask` returns."""
    question: str
    tokens: list[str]
    unknown: list[str]            # words the model has no embedding for (read as <UNK>)
    top: list[tuple[str, float]]  # the best answers with their probabilities
    gammas: np.ndarray            # (K, C): the γ each FiLM-ed block multiplies by (after any dial)
    betas: np.ndarray             # (K, C)
    heat: np.ndarray              # (H, W): share of the max-pooled features from each cell

    @property
    def prediction(self) -> str:
        return self.top[0][0]


class Explorer:
    """A FiLM model ready to answer typed questions about single images (see the module)."""

    def __init__(self, film, vocab: Vocab, perception=None):
        if film.cfg.stem == "features" and perception is None:
            raise ValueError("this FiLM model reads maps: give the perception CNN that makes them")
        self.film, self.perception, self.vocab = film.eval(), None if perception is None else perception.eval(), vocab

    @classmethod
    def from_shipped(cls, name: str | None = None) -> "Explorer":
        """The explorer on the shipped model (:mod:`filmlib.shipped`): no training needed."""
        from . import shipped
        s = shipped.load(name or shipped.DEFAULT)
        return cls(s.film, s.vocab, s.perception)

    @classmethod
    def from_run(cls, run_dir, vocab_path, perception_checkpoint=None) -> "Explorer":
        """The explorer on a trained run (``best.pt``), its data's vocabulary and, for a
        features stem, the perception checkpoint whose maps it read."""
        from .experiment import load_run
        from .perception import load_perception
        film, _ = load_run(run_dir)
        perception = None if perception_checkpoint is None else load_perception(perception_checkpoint)
        return cls(film, Vocab.load(vocab_path), perception)

    @property
    def blocks(self) -> tuple[int, ...]:
        """The 0-based ResBlocks that are FiLM-ed, in the order of the γ and β rows."""
        return tuple(self.film.cfg.filmed)

    def visual(self, image: np.ndarray) -> torch.Tensor:
        """What the model reads for an (H, W, 3) uint8 image: the image squashed to the model's
        square input (bicubic, as preprocessing does) and normalised, through the perception
        trunk for a features stem."""
        size = self.perception.cfg.image_size if self.perception is not None else self.film.cfg.image_size
        square = resize_image(Image.fromarray(np.asarray(image)[..., :3]), (size, size))
        x = normalize_images(torch.from_numpy(np.ascontiguousarray(square))[None])
        if self.perception is None:
            return x
        with torch.no_grad():
            return self.perception.trunk(x)

    def encode(self, question: str) -> tuple[torch.Tensor, list[str], list[str]]:
        """(indices (1, T), tokens, unknown words) of a typed question."""
        tokens = tokenize(question.strip())
        if not tokens:
            raise ValueError("type a question")
        known = self.vocab.question_token_to_idx
        unknown = [t for t in tokens if t not in known]
        return torch.tensor([self.vocab.encode_question(question)]), tokens, unknown

    @torch.no_grad()
    def ask(self, image_or_visual, question: str, *, keep_gamma: dict[int, float] | None = None,
            keep_beta: dict[int, float] | None = None, top: int = 5) -> Answer:
        """Answer ``question`` about an image ((H, W, 3) uint8) or a visual input already made
        (:meth:`visual`). ``keep_gamma`` / ``keep_beta``: {block (0-based): k} sets that block's
        γ to 1 + k (γ − 1) and β to k β: 0 removes the block's modulation, 1 keeps it as
        predicted, 2 doubles its departure from the identity."""
        visual = image_or_visual if torch.is_tensor(image_or_visual) else self.visual(image_or_visual)
        q, tokens, unknown = self.encode(question)
        gammas, betas = self.film.film_params(q)                        # (1, K, C)
        gammas, betas = gammas.clone(), betas.clone()
        for dial, name in ((keep_gamma, "keep_gamma"), (keep_beta, "keep_beta")):
            for block in dial or {}:
                if block not in self.blocks:
                    raise ValueError(f"{name}: block {block} is not FiLM-ed (FiLM-ed: {self.blocks})")
        for block, k in (keep_gamma or {}).items():
            j = self.blocks.index(block)
            gammas[:, j] = 1 + k * (gammas[:, j] - 1)
        for block, k in (keep_beta or {}).items():
            j = self.blocks.index(block)
            betas[:, j] = k * betas[:, j]
        logits = self.film(visual, gammas=gammas, betas=betas)
        probs = torch.softmax(logits.float(), dim=1)[0]
        best = torch.topk(probs, min(top, len(probs)))
        answers = self.vocab.answer_idx_to_token
        heat = pooled_sources(self.film, visual, None, gammas=gammas, betas=betas)[0].numpy()
        return Answer(question, tokens, unknown, [(answers[int(i)], float(p)) for p, i in zip(best.values, best.indices)],
                      gammas[0].numpy(), betas[0].numpy(), heat)

