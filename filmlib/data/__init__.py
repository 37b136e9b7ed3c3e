"""Dataset files: the CLEVR v1.0 layout (:mod:`filmlib.data.clevr`)."""
from filmlib.data.clevr import (
    FINAL_FUNCTIONS,
    QUESTION_TYPES,
    TYPE_NAMES,
    CLEVRFormatError,
    family_index,
    final_function,
    image_filename,
    image_path,
    load_questions,
    load_questions_file,
    load_scenes,
    load_scenes_file,
    normalize_program,
    question_type,
    questions_path,
    read_info,
    save_questions,
    save_scenes,
    scenes_path,
)

__all__ = [
    "CLEVRFormatError", "FINAL_FUNCTIONS", "QUESTION_TYPES", "TYPE_NAMES", "family_index",
    "final_function", "image_filename", "image_path", "load_questions", "load_questions_file",
    "load_scenes", "load_scenes_file", "normalize_program", "question_type", "questions_path",
    "read_info", "save_questions", "save_scenes", "scenes_path",
]
