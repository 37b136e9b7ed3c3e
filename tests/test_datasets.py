"""Datasets over the HDF5 caches: items, collate, workers, caching, the authors' files."""
import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from filmlib.data import clevr
from filmlib.data.clevr import FINAL_FUNCTIONS, QUESTION_TYPES
from filmlib.data.datasets import ClevrQuestionsDataset, collate, make_loader
from filmlib.data.features import IMAGENET_MEAN, IMAGENET_STD
from filmlib.data.preprocess import DataFileError, preprocess_root
from filmlib.data.vocab import UNK_IDX, Vocab, tokenize
from filmlib.synth.generate import SplitSpec, generate_split

SIZE = (16, 24)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_split(root, SplitSpec(split="train", num_images=6, questions_per_image=3, width=48,
                                   height=32, humans_per_image=1), progress=False)
    out = root / "cache"
    preprocess_root(root, out, splits=("train",), image_size=SIZE, humans_min_count=1)
    return root, out


def dataset(cache, **kw):
    _, out = cache
    return ClevrQuestionsDataset(out / "train_questions.h5", out / "train_images.h5", **kw)


def same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_items_match_the_source(cache):
    root, out = cache
    questions = clevr.load_questions(clevr.questions_path(root, "train"))
    ds = dataset(cache, cache_visual=False)
    vocab = ds.vocab
    assert len(ds) == len(questions) == 18
    with h5py.File(out / "train_images.h5") as f:
        images = f["images"][()]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i, q in enumerate(questions):
        item = ds[i]
        assert item["questions"].dtype == torch.long
        assert item["questions"][0] == 1 and item["questions"][-1] == 2
        assert vocab.decode_question(item["questions"]) == tokenize(q["question"])
        assert vocab.decode_answer(item["answers"]) == q["answer"]
        assert item["image_indices"] == q["image_index"]
        assert item["question_indices"] == i
        assert item["families"] == q["question_family_index"]
        assert QUESTION_TYPES[item["types"]] == clevr.question_type(q["program"])
        assert FINAL_FUNCTIONS[item["final_functions"]] == clevr.final_function(q["program"])
        expected = (torch.from_numpy(images[q["image_index"]]).float() / 255 - mean) / std
        assert item["visual"].dtype == torch.float32
        torch.testing.assert_close(item["visual"], expected)
    with pytest.raises(IndexError):
        ds[len(ds)]
    # the DataLoader's batched fetch (unsorted, repeated images) gives the same items
    order = [7, 0, 7, 17, 3]
    same_batches([collate(ds.__getitems__(order))], [collate([ds[i] for i in order])])


def test_normalization_options(cache):
    raw = dataset(cache, normalize=None)[0]["visual"]
    assert raw.min() >= 0 and raw.max() <= 1 and raw.max() > 0.2
    custom = dataset(cache, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))[0]["visual"]
    torch.testing.assert_close(custom, (raw - 0.5) / 0.25)


def test_collate_trims_padding(cache):
    ds = dataset(cache)
    stored = ds.max_question_length
    items = [ds[i] for i in range(len(ds))]
    lengths = [len(it["questions"]) for it in items]
    short = sorted(range(len(items)), key=lambda i: lengths[i])[:3]
    assert max(lengths[i] for i in short) < stored
    batch = collate([items[i] for i in short])
    assert batch["questions"].shape == (3, max(lengths[i] for i in short))
    assert batch["question_lengths"].tolist() == [lengths[i] for i in short]
    for row, i in zip(batch["questions"], short):
        assert torch.equal(row[:lengths[i]], items[i]["questions"])
        assert not row[lengths[i]:].any()
    # rows still padded to the file's width are trimmed the same way
    padded = [dict(items[i], questions=torch.nn.functional.pad(items[i]["questions"], (0, 7)))
              for i in short]
    assert torch.equal(collate(padded)["questions"], batch["questions"])
    assert batch["visual"].shape == (3, 3, *SIZE)
    assert batch["answers"].tolist() == [items[i]["answers"] for i in short]


@pytest.mark.parametrize("context, workers", [("fork", 2), ("spawn", 1)])
def test_workers_return_the_same_items(cache, context, workers):
    ds = dataset(cache, cache_visual=False)
    serial = list(make_loader(ds, 5, num_workers=0))
    ds[0]                                    # open the files before the workers start
    parallel = list(make_loader(ds, 5, num_workers=workers, multiprocessing_context=context))
    same_batches(serial, parallel)


def test_seeded_order_is_reproducible(cache):
    ds = dataset(cache)

    def order(seed, epochs=2):
        loader = make_loader(ds, 4, shuffle=True, seed=seed)
        return [b["question_indices"].tolist() for _ in range(epochs) for b in loader]

    first = order(7)
    assert first == order(7)
    assert first != order(8)
    flat = sum(first[:5], [])
    assert sorted(flat) == list(range(len(ds)))               # one epoch is a permutation
    assert first[:5] != first[5:]                              # the next epoch is reshuffled


def test_distributed_sampler_splits_the_data(cache):
    ds = dataset(cache)
    seen = []
    for rank in range(2):
        loader = make_loader(ds, 4, shuffle=True, seed=1, distributed=True, rank=rank,
                             world_size=2)
        loader.sampler.set_epoch(0)
        seen.append([i for b in loader for i in b["question_indices"].tolist()])
    assert len(seen[0]) == len(seen[1]) == len(ds) // 2
    assert sorted(seen[0] + seen[1]) == list(range(len(ds)))


def test_memory_bounded_without_cache(cache, tmp_path):
    _, out = cache
    big = tmp_path / "big_images.h5"                         # 6 x 3 x 128 x 128: 295 kB
    with h5py.File(big, "w") as f:
        f.create_dataset("images", data=np.full((6, 3, 128, 128), 7, np.uint8),
                         chunks=(1, 3, 128, 128))
    streamed = ClevrQuestionsDataset(out / "train_questions.h5", big, cache_visual=False)
    assert streamed._visual_cache is None
    assert streamed._vfile is None                             # nothing opened in __init__
    assert len(pickle.dumps(streamed)) < 6 * 3 * 128 * 128 / 10
    assert streamed[0]["visual"].shape == (3, 128, 128)
    assert streamed._vfile is not None
    assert len(pickle.dumps(streamed)) < 6 * 3 * 128 * 128 / 10   # handles are not pickled
    whole = ClevrQuestionsDataset(out / "train_questions.h5", big, cache_visual=True)
    assert len(pickle.dumps(whole)) > 6 * 3 * 128 * 128

    streamed = dataset(cache, cache_visual=False)
    with h5py.File(out / "train_images.h5") as f:
        nbytes = f["images"].size
    cached = dataset(cache, cache_visual=True)
    assert cached._visual_cache is not None and cached._visual_cache.nbytes == nbytes
    auto_small = dataset(cache, cache_visual="auto", cache_limit_bytes=nbytes)
    auto_over = dataset(cache, cache_visual="auto", cache_limit_bytes=nbytes - 1)
    assert auto_small._visual_cache is not None and auto_over._visual_cache is None
    same_batches([collate([cached[i] for i in range(len(cached))])],
                 [collate([streamed[i] for i in range(len(streamed))])])
    uncached_q = dataset(cache, cache_questions=False, cache_visual=False)
    assert uncached_q._questions is None
    same_batches([collate([uncached_q[i] for i in range(6)])],
                 [collate([streamed[i] for i in range(6)])])


def test_subsets_questions_only_and_programs(cache):
    _, out = cache
    ds = dataset(cache, indices=[5, 2, 9], max_samples=2)
    assert len(ds) == 2 and [ds[k]["question_indices"] for k in range(2)] == [5, 2]
    q_only = ClevrQuestionsDataset(out / "train_questions.h5", return_programs=True)
    item = q_only[0]
    assert "visual" not in item
    assert q_only.vocab.decode_program(item["programs"])[0] == \
        FINAL_FUNCTIONS[item["final_functions"]]
    assert "programs" in collate([q_only[0], q_only[1]])


def test_humans_questions_with_a_smaller_vocab(cache):
    _, out = cache
    base = Vocab.load(out / "vocab.json")
    n = len(base.question_token_to_idx)
    grown = ClevrQuestionsDataset(out / "train_humans_questions.h5", out / "train_images.h5")
    clipped = ClevrQuestionsDataset(out / "train_humans_questions.h5", out / "train_images.h5",
                                    vocab_size=n)
    rows = [grown[i]["questions"] for i in range(len(grown))]
    assert any((r >= n).any() for r in rows)
    for i, r in enumerate(rows):
        assert torch.equal(clipped[i]["questions"], torch.where(r >= n, UNK_IDX, r))
    assert grown[0]["types"] == -1 and grown[0]["families"] == -1


def write_authors_files(tmp_path, n_images=3):
    """Files as the FiLM authors' scripts write them: no attributes, only their datasets."""
    vocab = {
        "question_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "How": 4,
                                  "Is": 5, "a": 6, "cube": 7, "many": 8, "there": 9},
        "program_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "count": 4,
                                 "exist": 5, "filter_shape[cube]": 6, "scene": 7},
        "answer_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "0": 4,
                                "1": 5, "no": 6, "yes": 7},
    }
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    questions = np.array([[1, 4, 8, 7, 2, 0], [1, 5, 9, 6, 7, 2], [1, 4, 8, 2, 0, 0]], np.int32)
    programs = np.array([[1, 4, 6, 7, 2], [1, 5, 6, 7, 2], [1, 4, 7, 2, 0]], np.int32)
    with h5py.File(tmp_path / "val_questions.h5", "w") as f:
        f.create_dataset("questions", data=questions)
        f.create_dataset("image_idxs", data=[2, 0, 1])
        f.create_dataset("orig_idxs", data=[0, 1, 2])
        f.create_dataset("programs", data=programs)
        f.create_dataset("question_families", data=[4, 17, 4])
        f.create_dataset("answers", data=[5, 7, 4])
    features = np.random.default_rng(0).standard_normal((n_images, 1024, 14, 14)).astype(np.float32)
    with h5py.File(tmp_path / "val_features.h5", "w") as f:
        f.create_dataset("features", data=features)
    return features


def test_authors_files_feed_the_dataset(tmp_path):
    features = write_authors_files(tmp_path)
    ds = ClevrQuestionsDataset(tmp_path / "val_questions.h5", tmp_path / "val_features.h5",
                               vocab=tmp_path / "vocab.json")
    assert len(ds) == 3
    item = ds[0]
    assert item["questions"].tolist() == [1, 4, 8, 7, 2]
    assert item["visual"].dtype == torch.float32 and item["visual"].shape == (1024, 14, 14)
    assert np.array_equal(item["visual"].numpy(), features[2])        # features are not normalised
    assert (item["answers"], item["families"], item["image_indices"]) == (5, 4, 2)
    assert [QUESTION_TYPES[ds[i]["types"]] for i in range(3)] == ["count", "exist", "count"]
    assert ds.vocab.decode_answer(ds[1]["answers"]) == "yes"
    batch = next(iter(make_loader(ds, 3)))
    assert batch["questions"].shape == (3, 6) and batch["visual"].shape == (3, 1024, 14, 14)
    assert batch["question_lengths"].tolist() == [5, 6, 4]
    # without a vocabulary the types are unknown, everything else still loads
    bare = ClevrQuestionsDataset(tmp_path / "val_questions.h5", tmp_path / "val_features.h5")
    assert bare.vocab is None and bare[0]["types"] == -1 and bare[0]["answers"] == 5


def test_malformed_files_get_clear_errors(tmp_path):
    write_authors_files(tmp_path, n_images=2)            # question 0 refers to image 2
    q, v = tmp_path / "val_questions.h5", tmp_path / "val_features.h5"
    with pytest.raises(DataFileError, match=r"val_questions.h5: question 0 refers to image 2, "
                                            r"out of range for .*val_features.h5 \(2 images\)"):
        ClevrQuestionsDataset(q, v)
    assert len(ClevrQuestionsDataset(q, v, indices=[1, 2])) == 2       # the others are fine

    no_questions = tmp_path / "empty.h5"
    with h5py.File(no_questions, "w") as f:
        f.create_dataset("image_idxs", data=[0])
    with pytest.raises(DataFileError, match=r"empty.h5: no 'questions' dataset"):
        ClevrQuestionsDataset(no_questions, v)
    with pytest.raises(DataFileError, match=r"val_questions.h5: no 'features' or 'images'"):
        ClevrQuestionsDataset(q, q)
    with pytest.raises(DataFileError, match="missing.h5: file not found"):
        ClevrQuestionsDataset(tmp_path / "missing.h5", v)
    not_h5 = tmp_path / "text.h5"
    not_h5.write_text("hello")
    with pytest.raises(DataFileError, match="text.h5: not a readable HDF5 file"):
        ClevrQuestionsDataset(not_h5, v)
    bad_len = tmp_path / "bad_len.h5"
    with h5py.File(bad_len, "w") as f:
        f.create_dataset("questions", data=np.ones((3, 4), np.int32))
        f.create_dataset("image_idxs", data=[0, 1])
    with pytest.raises(DataFileError, match=r"bad_len.h5: 'image_idxs' has shape \(2,\)"):
        ClevrQuestionsDataset(bad_len)
