"""Scene graphs without rendering, for fast question-engine tests."""
import numpy as np

from filmlib.synth.camera import default_camera
from filmlib.synth.scene import compute_relationships, sample_layout


def layout_scenes(n: int, seed: int = 0, split: str = "train", cogent=None) -> list[dict]:
    camera = default_camera()
    directions = camera.directions()
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        objects = sample_layout(rng, int(rng.integers(3, 11)), directions, cogent)
        for o, (col, row, depth) in zip(objects, camera.project([o["3d_coords"] for o in objects])):
            o["pixel_coords"] = [int(round(col)), int(round(row)), float(depth)]
        scenes.append({"split": split, "image_index": i,
                       "image_filename": f"CLEVR_{split}_{i:06d}.png", "objects": objects,
                       "relationships": compute_relationships(objects, directions),
                       "directions": directions})
    return scenes
