"""Tokenisation and vocabularies in the FiLM authors' conventions."""
import json

import pytest

from filmlib.data.vocab import (
    SPECIAL_TOKENS, UNK_IDX, Vocab, encode_question, program_tokens, tokenize,
)

SPECIALS = ["<NULL>", "<START>", "<END>", "<UNK>"]

QUESTIONS = [
    {"question": "How many red cubes are there?", "answer": "2",
     "program": [{"function": "scene", "inputs": [], "value_inputs": []},
                 {"function": "filter_color", "inputs": [0], "value_inputs": ["red"]},
                 {"function": "filter_shape", "inputs": [1], "value_inputs": ["cube"]},
                 {"function": "count", "inputs": [2], "value_inputs": []}]},
    {"question": "Is there a cube; what color is it?", "answer": "yes",
     "program": [{"type": "scene", "inputs": [], "side_inputs": []},
                 {"type": "filter_shape", "inputs": [0], "side_inputs": ["cube"]},
                 {"type": "exist", "inputs": [1], "side_inputs": []}]},
    {"question": "Are there more cubes than spheres?", "answer": "no"},
]

# The two-branch program "are there more red things than cubes":
# greater_than(count(filter_color[red](scene)), count(filter_shape[cube](scene)))
TWO_BRANCHES = [
    {"function": "scene", "inputs": [], "value_inputs": []},
    {"function": "filter_color", "inputs": [0], "value_inputs": ["red"]},
    {"function": "count", "inputs": [1], "value_inputs": []},
    {"function": "scene", "inputs": [], "value_inputs": []},
    {"function": "filter_shape", "inputs": [3], "value_inputs": ["cube"]},
    {"function": "count", "inputs": [4], "value_inputs": []},
    {"function": "greater_than", "inputs": [2, 5], "value_inputs": []},
]


def test_tokenize_rules():
    assert tokenize("Is there a red cube; what size is it, then?") == [
        "Is", "there", "a", "red", "cube", ";", "what", "size", "is", "it", ",", "then"]
    assert tokenize("The  Big.   thing?") == ["The", "Big", "thing"]   # case kept, no empties
    assert tokenize("a;b,c") == ["a", ";", "b", ",", "c"]
    assert tokenize("") == []


def test_program_tokens_prefix_order():
    assert program_tokens(QUESTIONS[0]["program"]) == [
        "count", "filter_shape[cube]", "filter_color[red]", "scene"]
    # the generator's type/side_inputs spelling gives the same tokens
    assert program_tokens(QUESTIONS[1]["program"]) == ["exist", "filter_shape[cube]", "scene"]
    assert program_tokens(TWO_BRANCHES) == [
        "greater_than", "count", "filter_color[red]", "scene",
        "count", "filter_shape[cube]", "scene"]


def test_build_orders_specials_then_sorted_tokens():
    v = Vocab.build(QUESTIONS)
    for mapping in (v.question_token_to_idx, v.program_token_to_idx, v.answer_token_to_idx):
        tokens = sorted(mapping, key=mapping.get)
        assert tokens[:4] == SPECIALS
        assert tokens[4:] == sorted(tokens[4:])
        assert sorted(mapping.values()) == list(range(len(mapping)))
    assert list(v.answer_token_to_idx)[4:] == ["2", "no", "yes"]
    assert v.num_answers == 7
    assert ";" in v.question_token_to_idx and "?" not in v.question_token_to_idx
    assert "How" in v.question_token_to_idx and "how" not in v.question_token_to_idx
    assert set(v.program_token_to_idx) == set(SPECIALS) | {
        "count", "exist", "filter_color[red]", "filter_shape[cube]", "scene"}


def test_min_count_drops_rare_words():
    v = Vocab.build(QUESTIONS, min_count=2)
    # only "there" (3 times) and "cubes" (twice) recur; "Is"/"is" differ by case
    assert list(v.question_token_to_idx) == SPECIALS + ["cubes", "there"]


def test_encode_question_start_end_unk_and_max_len():
    v = Vocab.build(QUESTIONS)
    q = v.question_token_to_idx
    ids = encode_question("How many purple cubes are there?", v)
    assert ids == [1, q["How"], q["many"], UNK_IDX, q["cubes"], q["are"], q["there"], 2]
    assert v.decode_question(ids) == ["How", "many", "<UNK>", "cubes", "are", "there"]
    short = encode_question("How many purple cubes are there?", v, max_len=4)
    assert short == [1, q["How"], q["many"], 2]
    with pytest.raises(ValueError):
        encode_question("How many", v, max_len=1)
    assert v.encode_answer("purple") == UNK_IDX
    prog = v.encode_program(QUESTIONS[0]["program"])
    assert prog[0] == 1 and prog[-1] == 2
    assert v.decode_program(prog) == program_tokens(QUESTIONS[0]["program"])


def test_save_load_round_trip(tmp_path):
    v = Vocab.build(QUESTIONS)
    path = v.save(tmp_path / "sub" / "vocab.json")
    assert Vocab.load(path) == v
    data = json.loads(path.read_text())
    assert sorted(data) == ["answer_token_to_idx", "program_token_to_idx", "question_token_to_idx"]
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]   # no temporary left


def test_extend_appends_and_keeps_indices():
    v = Vocab.build(QUESTIONS)
    humans = [{"question": "What hue is the shiny ball?"}] * 5 + [{"question": "Which zebra?"}] * 4
    grown = v.extend(humans, min_count=5)
    for token, idx in v.question_token_to_idx.items():
        assert grown.question_token_to_idx[token] == idx
    new = sorted(grown.question_token_to_idx, key=grown.question_token_to_idx.get)[
        len(v.question_token_to_idx):]
    assert new == sorted({"What", "hue", "the", "shiny", "ball"})   # "is" was known already
    assert "zebra" not in grown.question_token_to_idx and "Which" not in grown.question_token_to_idx
    assert grown.program_token_to_idx == v.program_token_to_idx
    assert grown.answer_token_to_idx == v.answer_token_to_idx
    assert "hue" not in v.question_token_to_idx                       # the original is untouched


def test_authors_vocab_json_loads(tmp_path):
    authors = {
        "question_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, ";": 4,
                                  "Are": 5, "How": 6, "cube": 7, "many": 8},
        "program_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "count": 4,
                                 "filter_shape[cube]": 5, "scene": 6},
        "answer_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "0": 4,
                                "1": 5, "no": 6, "yes": 7},
    }
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(authors))
    v = Vocab.load(path)
    assert v.to_dict() == authors
    assert encode_question("How many cube?", v) == [1, 6, 8, 7, 2]
    assert v.answer_idx_to_token[7] == "yes"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("answer_token_to_idx"), "answer_token_to_idx"),
    (lambda d: d["question_token_to_idx"].update({"<UNK>": 9}), "<UNK>"),
    (lambda d: d["program_token_to_idx"].update({"scene": 7}), "indices"),
])
def test_malformed_vocab_names_file_and_problem(tmp_path, edit, message):
    data = Vocab.build(QUESTIONS).to_dict()
    edit(data)
    path = tmp_path / "bad_vocab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as err:
        Vocab.load(path)
    assert "bad_vocab.json" in str(err.value)


def test_specials_are_the_authors():
    assert SPECIAL_TOKENS == {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3}
