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

# Vocabularies are light (standard library only); the HDF5 caches and datasets need h5py and
# torch, so they load on first use: ``import filmlib.data`` stays cheap.
from filmlib.data.vocab import (  # noqa: E402
    SPECIAL_TOKENS,
    Vocab,
    encode_question,
    load_vocab,
    program_tokens,
    tokenize,
)

_LAZY = {
    "DataFileError": "filmlib.data.preprocess",
    "preprocess_questions": "filmlib.data.preprocess",
    "preprocess_images": "filmlib.data.preprocess",
    "preprocess_root": "filmlib.data.preprocess",
    "split_image_paths": "filmlib.data.preprocess",
    "extract_features": "filmlib.data.features",
    "build_feature_extractor": "filmlib.data.features",
    "ClevrQuestionsDataset": "filmlib.data.datasets",
    "collate": "filmlib.data.datasets",
    "make_loader": "filmlib.data.datasets",
}

__all__ += ["SPECIAL_TOKENS", "Vocab", "encode_question", "load_vocab", "program_tokens",
            "tokenize", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'filmlib.data' has no attribute {name!r}")
