"""The FiLM model of the paper; every ablation of Tables 2 and 3 is a field of ``FiLMConfig``.

    from filmlib.models import FiLMModel, preset, ABLATIONS, DEPTHS
    cfg = preset("cpu", vocab_size=len(vocab), num_answers=len(answers))
    model = FiLMModel(cfg)                           # logits = model(images, questions)
    ablated = FiLMModel(cfg.ablation("beta=0"))      # Table 2 row
    deeper = FiLMModel(cfg.variant(num_blocks=6))    # Table 3 row

Presets (parameters with CLEVR's 93-token vocabulary and 28 answers; ``param_count``):
| preset | stem: input | maps | channels | GRU | total | generator |
|---|---|---|---|---|---|---|
| paper | features: 1024x14x14 | 14x14 | 128 | 4096 | 59,491,652 | 57,027,752 |
| paper | pixels: 3x224x224    | 14x14 | 128 | 4096 | 59,103,428 | 57,027,752 |
| cpu   | pixels: 3x80x80      | 10x10 | 64  | 256  | 830,684    | 439,936    |
| cpu   | features: 1024x14x14 | 14x14 | 64  | 256  | 1,287,132  | 439,936    |
| smoke | pixels: 3x32x32      | 8x8   | 16  | 32   | 28,684     | 10,512     |
| smoke | features: 1024x14x14 | 14x14 | 16  | 32   | 171,516    | 10,512     |
"""
from .baselines import BASELINES, BaselineConfig, baseline_preset, build_baseline
from .config import ABLATIONS, DEPTHS, FILM_POSITIONS, PRESETS, STEMS, FiLMConfig, preset
from .filmed_network import Classifier, FiLMedNetwork, FiLMedResBlock, coord_maps
from .generator import FiLMGenerator, question_lengths
from .model import FiLMModel, param_count

__all__ = [
    "BASELINES", "BaselineConfig", "baseline_preset", "build_baseline",
    "ABLATIONS", "DEPTHS", "FILM_POSITIONS", "PRESETS", "STEMS", "FiLMConfig", "preset",
    "Classifier", "FiLMedNetwork", "FiLMedResBlock", "coord_maps",
    "FiLMGenerator", "question_lengths", "FiLMModel", "param_count",
]
