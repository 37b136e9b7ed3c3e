"""Reading and writing the CLEVR v1.0 layout: round trips, atomic writes, malformed files."""
import copy
import json
import os
import re

import pytest

from filmlib.data import clevr
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

DIRECTIONS = {"behind": [-0.75, 0.66, 0.0], "front": [0.75, -0.66, 0.0],
              "left": [-0.66, -0.75, 0.0], "right": [0.66, 0.75, 0.0],
              "above": [0.0, 0.0, 1.0], "below": [0.0, 0.0, -1.0]}


def make_object(size, color, material, shape, x, y):
    return {"shape": shape, "color": color, "material": material, "size": size,
            "3d_coords": [x, y, 0.7 if size == "large" else 0.35],
            "pixel_coords": [240, 160, 10.5], "rotation": 37.5}


def make_scene(index, split="val"):
    # Four objects; left to right 0 1 2 3, front to back 2 0 3 1.
    return {
        "split": split, "image_index": index, "image_filename": image_filename(split, index),
        "objects": [make_object("large", "red", "metal", "cube", -2.0, 0.5),
                    make_object("small", "blue", "rubber", "sphere", -1.0, 2.5),
                    make_object("large", "blue", "rubber", "cylinder", 0.5, -2.0),
                    make_object("small", "red", "metal", "sphere", 2.0, 1.5)],
        "relationships": {"left": [[], [0], [0, 1], [0, 1, 2]],
                          "right": [[1, 2, 3], [2, 3], [3], []],
                          "front": [[2], [0, 2, 3], [], [0, 2]],
                          "behind": [[1, 3], [], [0, 1, 3], [1]]},
        "directions": copy.deepcopy(DIRECTIONS),
    }


# "What colour is the cube left of the small blue sphere?" in both key styles.
PROGRAM = [
    {"function": "scene", "inputs": [], "value_inputs": []},
    {"function": "filter_size", "inputs": [0], "value_inputs": ["small"]},
    {"function": "filter_color", "inputs": [1], "value_inputs": ["blue"]},
    {"function": "unique", "inputs": [2], "value_inputs": []},
    {"function": "relate", "inputs": [3], "value_inputs": ["left"]},
    {"function": "filter_shape", "inputs": [4], "value_inputs": ["cube"]},
    {"function": "unique", "inputs": [5], "value_inputs": []},
    {"function": "query_color", "inputs": [6], "value_inputs": []},
]
GENERATOR_PROGRAM = [{"type": n["function"], "inputs": n["inputs"],
                      **({"side_inputs": n["value_inputs"]} if n["value_inputs"] else {})}
                     for n in PROGRAM]


def make_question(index, program, split="val"):
    return {"split": split, "image_index": 0, "image_filename": image_filename(split, 0),
            "question": "What color is the cube left of the small blue sphere?",
            "answer": "red", "program": program, "question_family_index": 30,
            "question_index": index}


INFO = {"split": "val", "version": "1.0", "license": "CC BY 4.0"}


@pytest.fixture
def scenes():
    return [make_scene(0), make_scene(1)]


@pytest.fixture
def questions():
    return [make_question(0, copy.deepcopy(PROGRAM)), make_question(1, copy.deepcopy(GENERATOR_PROGRAM)),
            {"split": "val", "image_index": 1, "question": "Is there a big ball?"}]  # test-style


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


# --- paths ---------------------------------------------------------------------------------

def test_paths(tmp_path):
    assert image_filename("val", 7) == "CLEVR_val_000007.png"
    assert image_path(tmp_path, "trainA", 123456) == tmp_path / "images/trainA/CLEVR_trainA_123456.png"
    assert scenes_path(tmp_path, "train") == tmp_path / "scenes/CLEVR_train_scenes.json"
    assert questions_path(str(tmp_path), "test") == tmp_path / "questions/CLEVR_test_questions.json"


# --- round trips ---------------------------------------------------------------------------

def test_scenes_round_trip(tmp_path, scenes):
    path = scenes_path(tmp_path, "val")  # parent directories do not exist yet
    save_scenes(path, scenes, INFO)
    info, loaded = load_scenes_file(path)
    assert loaded == scenes and info == INFO
    assert load_scenes(path) == scenes
    assert read_info(path) == INFO
    again = tmp_path / "again.json"
    save_scenes(again, loaded, info)
    assert again.read_bytes() == path.read_bytes()


def test_questions_round_trip_and_normalisation(tmp_path, questions):
    path = questions_path(tmp_path, "val")
    save_questions(path, questions, INFO)
    info, loaded = load_questions_file(path)
    assert info == INFO and len(loaded) == 3
    # both key styles come back as the same released-style program
    assert loaded[0]["program"] == PROGRAM and loaded[1]["program"] == PROGRAM
    assert "answer" not in loaded[2] and "program" not in loaded[2]
    expected = copy.deepcopy(questions)
    expected[1]["program"] = PROGRAM
    assert loaded == expected
    again = tmp_path / "again.json"
    save_questions(again, loaded, INFO)
    assert again.read_bytes() == path.read_bytes()
    assert questions[1]["program"] == GENERATOR_PROGRAM  # saving does not touch the caller's data


def test_generator_style_file_loads_like_released_style(tmp_path):
    released = write_json(tmp_path / "a.json", {"info": {}, "questions": [make_question(0, PROGRAM)]})
    generator = write_json(tmp_path / "b.json", {"info": {}, "questions": [make_question(0, GENERATOR_PROGRAM)]})
    assert load_questions(released) == load_questions(generator)
    assert load_questions(generator)[0]["program"] == PROGRAM == normalize_program(GENERATOR_PROGRAM)
    # without validation, programs are still normalised
    assert load_questions(generator, validate=False)[0]["program"] == PROGRAM


def test_bytes_are_deterministic(tmp_path, scenes):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    save_scenes(a, scenes, INFO)
    reordered = [dict(reversed(list(s.items()))) for s in scenes]  # same records, other key order
    save_scenes(b, reordered, dict(reversed(list(INFO.items()))))
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_text()) == {"info": INFO, "scenes": scenes}  # plain JSON
    save_scenes(a, scenes, INFO)  # overwriting gives the same bytes
    assert a.read_bytes() == b.read_bytes()


def test_humans_style_file_loads(tmp_path):
    path = write_json(tmp_path / "CLEVR-Humans-val.json", {"questions": [
        {"image_filename": "CLEVR_val_000000.png", "image_index": 0, "split": "val",
         "question": "What colour is the thing that looks like a ball?", "answer": "blue"}]})
    assert load_questions(path)[0]["answer"] == "blue"
    assert read_info(path) == {}
    assert family_index(load_questions(path)[0]) is None


def test_read_info_falls_back_to_full_parse(tmp_path):
    path = write_json(tmp_path / "q.json", {"questions": [], "info": {"version": "1.0"}})
    assert read_info(path) == {"version": "1.0"}


# --- atomic writes -------------------------------------------------------------------------

def test_failed_serialisation_leaves_nothing_behind(tmp_path, questions):
    questions[-1]["extra"] = object()  # passes the checks, fails half-way through writing
    path = tmp_path / "out" / "q.json"
    with pytest.raises(TypeError):
        save_questions(path, questions, INFO)
    assert os.listdir(tmp_path / "out") == []


def test_failed_save_keeps_the_old_file(tmp_path, questions, monkeypatch):
    path = tmp_path / "q.json"
    save_questions(path, questions, INFO)
    before = path.read_bytes()
    calls = []

    def interrupted(value):
        calls.append(value)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return json.dumps(value)

    monkeypatch.setattr(clevr, "_dumps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_questions(path, questions[:1] * 5, {"new": True})
    assert len(calls) == 3  # it really was interrupted mid-file
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["q.json"]


def test_save_checks_records_first(tmp_path, scenes):
    scenes[1]["objects"][0]["color"] = "pink"
    path = tmp_path / "s.json"
    with pytest.raises(CLEVRFormatError, match=r"s\.json: scenes\[1\]\.objects\[0\]\.color: unknown color 'pink'"):
        save_scenes(path, scenes, INFO)
    assert os.listdir(tmp_path) == []


# --- malformed files -----------------------------------------------------------------------

def _scenes_file(mutate):
    data = {"info": INFO, "scenes": [make_scene(0), make_scene(1)]}
    return mutate(data) or data


def _questions_file(mutate):
    data = {"info": INFO, "questions": [make_question(0, copy.deepcopy(PROGRAM)),
                                        make_question(1, copy.deepcopy(GENERATOR_PROGRAM))]}
    return mutate(data) or data


def _set(path, value):
    """A mutation that sets data[path...] = value."""
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


S, Q = "scenes", "questions"
MALFORMED = [
    ("top level is a list", S, lambda d: [d], r"expected a top-level object with a 'scenes' list, found list"),
    ("questions file read as scenes", S, lambda d: {"info": {}, "questions": []}, r"expected a top-level object with a 'scenes' list, found \['info', 'questions'\]"),
    ("info not an object", Q, _set(["info"], "v1"), r"'info' must be an object, got str"),
    ("scene missing key", S, _delete(["scenes", 1, "directions"]), r"scenes\[1\]: missing key\(s\) 'directions'"),
    ("object missing key", S, _delete(["scenes", 0, "objects", 3, "material"]), r"scenes\[0\]\.objects\[3\]: missing key\(s\) 'material'"),
    ("unknown colour", S, _set(["scenes", 0, "objects", 2, "color"], "pink"), r"scenes\[0\]\.objects\[2\]\.color: unknown color 'pink'"),
    ("unknown shape", S, _set(["scenes", 1, "objects", 1, "shape"], "cone"), r"scenes\[1\]\.objects\[1\]\.shape: unknown shape 'cone'"),
    ("short coordinates", S, _set(["scenes", 0, "objects", 1, "3d_coords"], [0.0, 1.0]), r"scenes\[0\]\.objects\[1\]\.3d_coords: expected a list of 3 finite numbers"),
    ("rotation a string", S, _set(["scenes", 0, "objects", 0, "rotation"], "90"), r"scenes\[0\]\.objects\[0\]\.rotation: expected a number"),
    ("image_index a string", S, _set(["scenes", 1, "image_index"], "1"), r"scenes\[1\]\.image_index: expected a non-negative integer, got '1'"),
    ("relationship index out of range", S, _set(["scenes", 0, "relationships", "left", 3], [0, 7]), r"scenes\[0\]\.relationships\.left\[3\]: 7 is not the index of another object \(0\.\.3\)"),
    ("object related to itself", S, _set(["scenes", 0, "relationships", "behind", 1], [1]), r"scenes\[0\]\.relationships\.behind\[1\]: 1 is not the index of another object"),
    ("relationships too short", S, _set(["scenes", 0, "relationships", "front"], [[2], [0, 2, 3], []]), r"scenes\[0\]\.relationships\.front: expected a list with one entry per object \(4\), got 3"),
    ("relation missing", S, _delete(["scenes", 1, "relationships", "right"]), r"scenes\[1\]\.relationships: missing key\(s\) 'right'"),
    ("direction missing", S, _delete(["scenes", 1, "directions", "above"]), r"scenes\[1\]\.directions: missing key\(s\) 'above'"),
    ("question missing text", Q, _delete(["questions", 1, "question"]), r"questions\[1\]: missing key\(s\) 'question'"),
    ("answer not a string", Q, _set(["questions", 0, "answer"], 3), r"questions\[0\]\.answer: expected a str, got 3"),
    ("negative family", Q, _set(["questions", 1, "question_family_index"], -1), r"questions\[1\]\.question_family_index: expected a non-negative integer"),
    ("program input points forward", Q, _set(["questions", 1, "program", 2, "inputs"], [5]), r"questions\[1\]\.program\[2\]: filter_color: input 0 is 5, not the index of an earlier node"),
    ("unknown function", Q, _set(["questions", 0, "program", 3, "function"], "teleport"), r"questions\[0\]\.program\[3\]: teleport: unknown function 'teleport'"),
    ("unknown colour value", Q, _set(["questions", 0, "program", 2, "value_inputs"], ["pink"]), r"questions\[0\]\.program\[2\]: filter_color: unknown color 'pink'"),
    ("unknown relation", Q, _set(["questions", 1, "program", 4, "side_inputs"], ["north"]), r"questions\[1\]\.program\[4\]: relate: unknown relation 'north'"),
    ("wrong input kind", Q, _set(["questions", 0, "program", 7, "function"], "count"), r"questions\[0\]\.program\[7\]: count: input 0 \(node 6, unique\) gives 'object', expected 'set'"),
    ("program ends in a set", Q, lambda d: d["questions"][0]["program"].__delitem__(slice(6, None)), r"questions\[0\]\.program: ends in a set, not an answer"),
    ("program not a list", Q, _set(["questions", 1, "program"], {"function": "scene"}), r"questions\[1\]\.program: a program must be a list of nodes"),
]


@pytest.mark.parametrize("name,kind,mutate,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file(tmp_path, name, kind, mutate, message):
    filename = f"CLEVR_val_{kind}.json"
    data = (_scenes_file if kind == S else _questions_file)(mutate)
    path = write_json(tmp_path / filename, data)
    load = load_scenes if kind == S else load_questions
    with pytest.raises(CLEVRFormatError, match=re.escape(str(path)) + ": " + message):
        load(path)


def test_malformed_files_are_valid_before_mutation(tmp_path):
    # the mutations above are the only defects: the unmutated files load
    assert len(load_scenes(write_json(tmp_path / "s.json", _scenes_file(lambda d: None)))) == 2
    assert len(load_questions(write_json(tmp_path / "q.json", _questions_file(lambda d: None)))) == 2


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "CLEVR_val_questions.json"
    path.write_text('{"info": {},\n "questions": [\n  {"image_index": 0,, "question": "?"}\n]}\n')
    with pytest.raises(CLEVRFormatError, match=re.escape(str(path)) + r": invalid JSON at line 3, column 21"):
        load_questions(path)
    truncated = tmp_path / "CLEVR_val_scenes.json"
    truncated.write_text('{"info": {}, "scenes": [')
    with pytest.raises(CLEVRFormatError, match=r"CLEVR_val_scenes\.json: invalid JSON at line 1"):
        load_scenes(truncated)
    assert read_info(truncated) == {}  # read_info reads only as far as the info
    broken_info = tmp_path / "CLEVR_val_scenes.json"
    broken_info.write_text('{"info": {"version": 1.0,}, "scenes": []}')
    with pytest.raises(CLEVRFormatError, match=r"CLEVR_val_scenes\.json: invalid JSON at line 1"):
        read_info(broken_info)


def test_format_error_is_a_value_error():
    assert issubclass(CLEVRFormatError, ValueError)


# --- question types ------------------------------------------------------------------------

EXPECTED_TYPES = {
    "count": "count", "exist": "exist",
    "equal_integer": "compare_numbers", "less_than": "compare_numbers", "greater_than": "compare_numbers",
    "query_size": "query_attribute", "query_color": "query_attribute",
    "query_material": "query_attribute", "query_shape": "query_attribute",
    "equal_size": "compare_attribute", "equal_color": "compare_attribute",
    "equal_material": "compare_attribute", "equal_shape": "compare_attribute",
}


@pytest.mark.parametrize("function,expected", EXPECTED_TYPES.items())
def test_question_type_of_every_final_function(function, expected):
    program = [{"function": "scene", "inputs": [], "value_inputs": []},
               {"function": function, "inputs": [0], "value_inputs": []}]
    assert final_function(program) == function
    assert question_type(program) == expected
    assert question_type([{"type": function, "inputs": [0], "side_inputs": []}]) == expected


def test_final_functions_and_type_names():
    assert set(FINAL_FUNCTIONS) == set(EXPECTED_TYPES) and len(FINAL_FUNCTIONS) == 13
    assert QUESTION_TYPES == ("count", "exist", "compare_numbers", "query_attribute", "compare_attribute")
    assert TYPE_NAMES["compare_numbers"] == "Compare Numbers" and set(TYPE_NAMES) == set(QUESTION_TYPES)


def test_final_function_aliases():
    def ending(name):
        return [{"type": name, "inputs": [], "side_inputs": []}]
    assert final_function(ending("query_colour")) == "query_color"
    assert final_function(ending("relate_filter_count")) == "count"
    assert final_function(ending("filter_exist")) == "exist"
    assert final_function(ending("query_shape_unique")) == "query_shape"
    assert final_function(ending("unique")) == "unique"


def test_question_type_rejects_non_final_programs():
    with pytest.raises(ValueError, match="'unique' is not a function a CLEVR question ends in"):
        question_type([{"function": "unique", "inputs": [], "value_inputs": []}])
    with pytest.raises(ValueError, match="non-empty"):
        final_function([])


def test_family_index():
    assert family_index(make_question(0, PROGRAM)) == 30
    assert family_index({"question": "?", "image_index": 0}) is None
