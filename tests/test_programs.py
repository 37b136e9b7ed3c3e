"""The program executor on small hand-built scenes whose answers can be read off by eye."""
import time

import pytest

from filmlib.programs import (
    FUNCTIONS,
    ProgramError,
    check_program,
    execute,
    execute_all,
    normalize_program,
    output_kinds,
)


def obj(size, color, material, shape):
    return {"size": size, "color": color, "material": material, "shape": shape}


# Scene A, left to right: 0 1 2 3; front to back: 2 0 3 1.
#   0 large red metal cube, 1 small blue rubber sphere,
#   2 large blue rubber cylinder, 3 small red metal sphere.
# relationships[rel][i] = the objects that are `rel` of object i.
SCENE_A = {
    "objects": [obj("large", "red", "metal", "cube"), obj("small", "blue", "rubber", "sphere"),
                obj("large", "blue", "rubber", "cylinder"), obj("small", "red", "metal", "sphere")],
    "relationships": {
        "left": [[], [0], [0, 1], [0, 1, 2]],
        "right": [[1, 2, 3], [2, 3], [3], []],
        "front": [[2], [0, 2, 3], [], [0, 2]],
        "behind": [[1, 3], [], [0, 1, 3], [1]],
    },
}

# Scene B, left to right: 2 0 1; front to back: 1 2 0.
#   0 small gray rubber cube, 1 small gray metal cylinder, 2 large yellow rubber cube.
SCENE_B = {
    "objects": [obj("small", "gray", "rubber", "cube"), obj("small", "gray", "metal", "cylinder"),
                obj("large", "yellow", "rubber", "cube")],
    "relationships": {
        "left": [[2], [0, 2], []],
        "right": [[1], [], [0, 1]],
        "front": [[1, 2], [], [1]],
        "behind": [[], [0, 2], [0]],
    },
}


class P:
    """A program builder: each call appends a node and returns its index."""

    def __init__(self):
        self.nodes = []

    def __call__(self, function, *inputs, value=None):
        self.nodes.append({"function": function, "inputs": list(inputs),
                           "value_inputs": [] if value is None else [value]})
        return len(self.nodes) - 1

    def unique(self, *filters):
        """scene -> filter_* ... -> unique, filters given as (attribute, value)."""
        s = self("scene")
        for attribute, value in filters:
            s = self(f"filter_{attribute}", s, value=value)
        return self("unique", s)


def program(build):
    p = P()
    build(p)
    return p.nodes


# (name, scene, program, expected answer). Together they use every function.
CASES = [
    ("count scene", SCENE_A, program(lambda p: p("count", p("scene"))), "4"),
    ("count empty", SCENE_A, program(lambda p: p("count", p("filter_color", p("scene"), value="green"))), "0"),
    ("exist", SCENE_B, program(lambda p: p("exist", p("filter_shape", p("scene"), value="cylinder"))), "yes"),
    ("exist no", SCENE_B, program(lambda p: p("exist", p("filter_shape", p("scene"), value="sphere"))), "no"),
    ("filter_size", SCENE_A, program(lambda p: p("count", p("filter_size", p("scene"), value="small"))), "2"),
    ("filter_material", SCENE_B, program(lambda p: p("count", p("filter_material", p("scene"), value="rubber"))), "2"),
    ("query_size", SCENE_A, program(lambda p: p("query_size", p.unique(("shape", "cylinder")))), "large"),
    ("query_color", SCENE_B, program(lambda p: p("query_color", p.unique(("size", "large")))), "yellow"),
    ("query_material", SCENE_B, program(lambda p: p("query_material", p.unique(("shape", "cylinder")))), "metal"),
    ("query_shape", SCENE_A, program(lambda p: p("query_shape", p.unique(("color", "blue"), ("size", "large")))), "cylinder"),
    # "What colour is the cube left of the small blue sphere?"
    ("cube left of sphere", SCENE_A, program(lambda p: p("query_color", p("unique", p("filter_shape", p("relate", p.unique(("size", "small"), ("color", "blue"), ("shape", "sphere")), value="left"), value="cube")))), "red"),
    # "What material is the sphere right of the large cylinder?"
    ("sphere right of cylinder", SCENE_A, program(lambda p: p("query_material", p("unique", p("filter_shape", p("relate", p.unique(("shape", "cylinder")), value="right"), value="sphere")))), "metal"),
    # "How many things are in front of the small red sphere?"  (2 and 0)
    ("relate front", SCENE_A, program(lambda p: p("count", p("relate", p.unique(("color", "red"), ("size", "small")), value="front"))), "2"),
    # "What shape is the thing behind the large yellow cube?"  (only object 0)
    ("relate behind", SCENE_B, program(lambda p: p("query_shape", p("unique", p("relate", p.unique(("color", "yellow")), value="behind")))), "cube"),
    # "How many things are red or cylinders?"  {0,3} | {2}
    ("union", SCENE_A, program(lambda p: p("count", p("union", p("filter_color", p("scene"), value="red"), p("filter_shape", p("scene"), value="cylinder")))), "3"),
    # "How many rubber things are right of the cube?"  {1,2,3} & {1,2}
    ("intersect", SCENE_A, program(lambda p: p("count", p("intersect", p("relate", p.unique(("shape", "cube")), value="right"), p("filter_material", p("scene"), value="rubber")))), "2"),
    # "What shape is the other thing of the same colour as the cube?"  (object 3)
    ("same_color", SCENE_A, program(lambda p: p("query_shape", p("unique", p("same_color", p.unique(("shape", "cube")))))), "sphere"),
    # "How many other things are the same size as the gray cylinder?"  (0; not itself)
    ("same_size", SCENE_B, program(lambda p: p("count", p("same_size", p.unique(("shape", "cylinder"))))), "1"),
    # "Is there another thing made of the same material as the large cube?"  (0 is rubber)
    ("same_material", SCENE_B, program(lambda p: p("exist", p("same_material", p.unique(("size", "large"))))), "yes"),
    # "How many other things have the same shape as the cylinder?"  (none)
    ("same_shape", SCENE_A, program(lambda p: p("count", p("same_shape", p.unique(("shape", "cylinder"))))), "0"),
    # "Are there as many cubes as cylinders?"  1 == 1
    ("equal_integer", SCENE_A, program(lambda p: p("equal_integer", p("count", p("filter_shape", p("scene"), value="cube")), p("count", p("filter_shape", p("scene"), value="cylinder")))), "yes"),
    # "Are there fewer cubes than spheres?"  1 < 2
    ("less_than", SCENE_A, program(lambda p: p("less_than", p("count", p("filter_shape", p("scene"), value="cube")), p("count", p("filter_shape", p("scene"), value="sphere")))), "yes"),
    ("less_than reversed", SCENE_A, program(lambda p: p("less_than", p("count", p("filter_shape", p("scene"), value="sphere")), p("count", p("filter_shape", p("scene"), value="cube")))), "no"),
    # "Are there more cubes than cylinders?"  2 > 1
    ("greater_than", SCENE_B, program(lambda p: p("greater_than", p("count", p("filter_shape", p("scene"), value="cube")), p("count", p("filter_shape", p("scene"), value="cylinder")))), "yes"),
    ("greater_than equal", SCENE_A, program(lambda p: p("greater_than", p("count", p("filter_shape", p("scene"), value="cube")), p("count", p("filter_shape", p("scene"), value="cylinder")))), "no"),
    # "Is the cube the same colour as the small metal sphere?"
    ("equal_color", SCENE_A, program(lambda p: p("equal_color", p("query_color", p.unique(("shape", "cube"))), p("query_color", p.unique(("material", "metal"), ("shape", "sphere"))))), "yes"),
    ("equal_shape", SCENE_A, program(lambda p: p("equal_shape", p("query_shape", p.unique(("shape", "cube"))), p("query_shape", p.unique(("shape", "cylinder"))))), "no"),
    ("equal_size", SCENE_B, program(lambda p: p("equal_size", p("query_size", p.unique(("shape", "cylinder"))), p("query_size", p.unique(("color", "gray"), ("shape", "cube"))))), "yes"),
    ("equal_material", SCENE_B, program(lambda p: p("equal_material", p("query_material", p.unique(("shape", "cylinder"))), p("query_material", p.unique(("size", "large"))))), "no"),
]


@pytest.mark.parametrize("name,scene,prog,expected", CASES, ids=[c[0] for c in CASES])
def test_execute(name, scene, prog, expected):
    assert execute(prog, scene) == expected


def test_cases_cover_every_function():
    used = {node["function"] for _, _, prog, _ in CASES for node in prog}
    assert used == set(FUNCTIONS)


def test_execute_all_gives_every_node_output():
    p = P()
    s = p("scene")
    red = p("filter_color", s, value="red")
    cube = p("unique", p("filter_shape", red, value="cube"))
    right = p("relate", cube, value="right")
    n = p("count", right)
    p("equal_integer", n, p("count", red))
    outputs = execute_all(p.nodes, SCENE_A)
    assert outputs == [frozenset({0, 1, 2, 3}), frozenset({0, 3}), frozenset({0}), 0,
                       frozenset({1, 2, 3}), 3, 2, False]
    assert isinstance(outputs[1], frozenset) and type(outputs[3]) is int
    assert output_kinds(p.nodes) == ["set", "set", "set", "object", "set", "integer", "integer",
                                     "bool"]


def test_generator_key_style_runs_the_same():
    _, scene, prog, expected = CASES[10]  # the chained "cube left of sphere" question
    old = [{"type": n["function"], "inputs": n["inputs"], "side_inputs": n["value_inputs"]}
           for n in prog]
    assert normalize_program(old) == prog
    assert execute(old, scene) == expected
    assert execute_all(old, scene) == execute_all(prog, scene)
    assert normalize_program([{"type": "scene", "inputs": []}]) == [
        {"function": "scene", "inputs": [], "value_inputs": []}]


def test_function_table_introspection():
    assert FUNCTIONS["union"].arity == 2 and FUNCTIONS["union"].output == "set"
    assert FUNCTIONS["relate"].inputs == ("object",) and FUNCTIONS["relate"].value_input == "relation"
    assert FUNCTIONS["filter_color"].value_input == "color"
    assert FUNCTIONS["equal_color"].inputs == ("color", "color")
    assert FUNCTIONS["scene"].arity == 0 and FUNCTIONS["count"].output == "integer"
    assert len(FUNCTIONS) == 26


def test_programs_are_not_mutated():
    prog = CASES[10][2]
    before = [dict(n, inputs=list(n["inputs"])) for n in prog]
    execute(prog, SCENE_A)
    check_program(prog)[0]["inputs"].append(99)
    assert prog == before


# --- invalid programs ---------------------------------------------------------------------

def _bad(build):
    return program(build)


BAD = [
    ("unique on none", SCENE_A, _bad(lambda p: p("query_size", p("unique", p("filter_color", p("scene"), value="green")))),
     r"node 2 \(unique\): expects exactly one object, got 0"),
    ("unique on two", SCENE_A, _bad(lambda p: p("query_size", p("unique", p("filter_shape", p("scene"), value="sphere")))),
     r"node 2 \(unique\): expects exactly one object, got 2 \[1, 3\]"),
    ("bad relation", SCENE_A, _bad(lambda p: p("count", p("relate", p.unique(("shape", "cube")), value="above"))),
     r"node 3 \(relate\): unknown relation 'above'"),
    ("bad colour", SCENE_A, _bad(lambda p: p("count", p("filter_color", p("scene"), value="pink"))),
     r"node 1 \(filter_color\): unknown color 'pink'"),
    ("value for the wrong attribute", SCENE_A, _bad(lambda p: p("count", p("filter_size", p("scene"), value="red"))),
     r"node 1 \(filter_size\): unknown size 'red'"),
    ("count on an object", SCENE_A, _bad(lambda p: p("count", p.unique(("shape", "cube")))),
     r"node 3 \(count\): input 0 \(node 2, unique\) gives 'object', expected 'set'"),
    ("query on a set", SCENE_A, _bad(lambda p: p("query_color", p("scene"))),
     r"node 1 \(query_color\): input 0 .* gives 'set', expected 'object'"),
    ("equal_color on sizes", SCENE_A, _bad(lambda p: p("equal_color", p("query_size", p.unique(("shape", "cube"))), p("query_size", p.unique(("shape", "cylinder"))))),
     r"node 8 \(equal_color\): input 0 .* gives 'size', expected 'color'"),
    ("less_than on a bool", SCENE_A, _bad(lambda p: p("less_than", p("exist", p("scene")), p("count", p("scene")))),
     r"node 4 \(less_than\): input 0 .* gives 'bool', expected 'integer'"),
    ("unknown function", SCENE_A, _bad(lambda p: p("count", p("teleport", p("scene")))),
     r"node 1 \(teleport\): unknown function 'teleport'"),
    ("too few inputs", SCENE_A, _bad(lambda p: p("count", p("union", p("scene")))),
     r"node 1 \(union\): expects 2 input\(s\), got 1"),
    ("inputs to scene", SCENE_A, _bad(lambda p: p("count", p("scene", p("scene")))),
     r"node 1 \(scene\): expects 0 input\(s\), got 1"),
    ("missing value", SCENE_A, _bad(lambda p: p("count", p("filter_color", p("scene")))),
     r"node 1 \(filter_color\): expects one color value input, got \[\]"),
    ("unexpected value", SCENE_A, _bad(lambda p: p("count", p("scene"), value="red")),
     r"node 1 \(count\): takes no value inputs, got \['red'\]"),
]


@pytest.mark.parametrize("name,scene,prog,message", BAD, ids=[b[0] for b in BAD])
def test_program_errors(name, scene, prog, message):
    with pytest.raises(ProgramError, match=message):
        execute(prog, scene)


def test_input_must_point_to_an_earlier_node():
    forward = [{"function": "scene", "inputs": [], "value_inputs": []},
               {"function": "count", "inputs": [2], "value_inputs": []},
               {"function": "exist", "inputs": [0], "value_inputs": []}]
    with pytest.raises(ProgramError, match=r"node 1 \(count\): input 0 is 2, not the index of an earlier node"):
        execute(forward, SCENE_A)
    itself = [{"function": "scene", "inputs": [], "value_inputs": []},
              {"function": "count", "inputs": [1], "value_inputs": []}]
    with pytest.raises(ProgramError, match=r"node 1 \(count\): input 0 is 1"):
        execute_all(itself, SCENE_A)
    with pytest.raises(ProgramError, match="input 0 is -1"):
        check_program([{"function": "scene", "inputs": []},
                       {"function": "count", "inputs": [-1]}])


def test_error_carries_node_and_function():
    with pytest.raises(ProgramError) as info:
        execute(BAD[1][2], SCENE_A)
    assert (info.value.node, info.value.function) == (2, "unique")
    assert isinstance(info.value, ValueError)


def test_malformed_nodes_and_programs():
    with pytest.raises(ProgramError, match="empty program"):
        execute([], SCENE_A)
    with pytest.raises(ProgramError, match="must be a list of nodes"):
        execute({"function": "scene"}, SCENE_A)
    with pytest.raises(ProgramError, match=r"node 0: missing or non-string 'function'"):
        normalize_program([{"inputs": []}])
    with pytest.raises(ProgramError, match=r"node 1: a node must be an object"):
        normalize_program([{"function": "scene"}, "count"])
    with pytest.raises(ProgramError, match="disagree"):
        normalize_program([{"function": "scene", "type": "count"}])


def test_execute_needs_an_answer_at_the_end():
    with pytest.raises(ProgramError, match=r"node 1 \(filter_color\): a program must end in an answer, not a set"):
        execute(_bad(lambda p: p("filter_color", p("scene"), value="red")), SCENE_A)
    with pytest.raises(ProgramError, match="not a object"):
        execute(_bad(lambda p: p.unique(("shape", "cube"))), SCENE_A)


def test_fast_enough_for_the_question_engine():
    progs = [(c[1], c[2]) for c in CASES]
    n = 0
    start = time.perf_counter()
    while n < 3000:
        for scene, prog in progs:
            execute(prog, scene)
        n += len(progs)
    rate = n / (time.perf_counter() - start)
    assert rate > 1000, f"only {rate:.0f} programs per second"
