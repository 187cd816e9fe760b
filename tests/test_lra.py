"""Tests for graphattn.data.lra: every label against an independent evaluator, lengths, seeds,
balance, batching, and the UD English-EWT loader (skipped when the shared data are absent)."""
from __future__ import annotations

import math
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from graphattn.data.lra import (
    BYTE_VOCAB_SIZE,
    EWT_GENRES,
    LISTOPS_SYMBOLS,
    LISTOPS_VOCAB_SIZE,
    PAD,
    SHAPE_CLASSES,
    LabeledSequence,
    PathfinderConfig,
    SequenceClassificationData,
    bytes_to_tokens,
    collate,
    evaluate_listops,
    listops_to_text,
    listops_tokenize,
    load_digits32,
    load_ewt_genre,
    make_listops,
    make_pathfinder,
    make_shapes,
    quantize,
    read_ewt_documents,
    tokens_to_text,
    upsample_bilinear,
)

# ----------------------------------------------------------------------------------------------
# batching and the container
# ----------------------------------------------------------------------------------------------


def test_collate_pads_with_zero_and_returns_lengths() -> None:
    examples = [LabeledSequence(torch.tensor([5, 6, 7]), 2), LabeledSequence(torch.tensor([9]), 0)]
    batch = collate(examples)
    assert batch.tokens.tolist() == [[5, 6, 7], [9, PAD, PAD]]
    assert batch.lengths.tolist() == [3, 1] and batch.labels.tolist() == [2, 0]
    assert batch.tokens.dtype == batch.lengths.dtype == batch.labels.dtype == torch.long
    assert collate(examples, pad_to=5).tokens.shape == (2, 5)
    with pytest.raises(ValueError, match="pad_to >= the longest example \\(3\\), got 2"):
        collate(examples, pad_to=2)
    with pytest.raises(ValueError, match="at least one example"):
        collate([])
    with pytest.raises(ValueError, match="example 0 to hold integer token ids of shape \\[L\\]"):
        collate([LabeledSequence(torch.zeros(2, 2, dtype=torch.long), 0)])


def test_data_set_works_with_a_data_loader_and_subsets() -> None:
    data = make_listops(6, seed=0, min_length=10, max_length=40)
    loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collate)
    batches = list(loader)
    assert [b.tokens.shape[0] for b in batches] == [4, 2]
    first = batches[0]
    assert first.tokens.shape[1] == int(first.lengths.max())
    for row, length, example in zip(first.tokens, first.lengths, [data[i] for i in range(4)]):
        assert torch.equal(row[:length], example.tokens) and (row[length:] == PAD).all()
    part = data.subset([4, 1])
    assert torch.equal(part.tokens[0], data.tokens[4]) and part.labels.tolist() == [data[4].label, data[1].label]
    assert len(data.subset(slice(0, 3))) == 3 and len(data.subset([])) == 0
    assert torch.equal(data[-1].tokens, data.tokens[5])
    with pytest.raises(TypeError, match="use subset\\(\\) for several examples"):
        data[0:2]
    assert int(data.class_counts().sum()) == 6 and data.class_counts().shape == (10,)
    assert repr(part).startswith("SequenceClassificationData(listops: 2 examples, lengths ")
    with pytest.raises(ValueError, match="labels of shape \\[2\\]"):
        SequenceClassificationData("x", [torch.tensor([1]), torch.tensor([1])], torch.tensor([0]), 2, 1, ("a",))


# ----------------------------------------------------------------------------------------------
# ListOps
# ----------------------------------------------------------------------------------------------


def parse_tree(text: str):
    """A nested (operator, [children]) tree from the text; digits are ints."""
    symbols = text.split()
    position = 0

    def node():
        nonlocal position
        symbol = symbols[position]
        position += 1
        if symbol.isdigit():
            return int(symbol)
        children = []
        while symbols[position] != "]":
            children.append(node())
        position += 1
        return (symbol, children)

    tree = node()
    assert position == len(symbols)
    return tree


def depth_and_arities(tree, depth=1):
    """(deepest node depth, all operator arities)."""
    if isinstance(tree, int):
        return depth, []
    deepest, arities = depth, [len(tree[1])]
    for child in tree[1]:
        d, a = depth_and_arities(child, depth + 1)
        deepest, arities = max(deepest, d), arities + a
    return deepest, arities


def test_listops_labels_lengths_and_structure_at_default_sizes() -> None:
    data = make_listops(40, seed=0)
    assert data.vocab_size == LISTOPS_VOCAB_SIZE == 16 and data.num_classes == 10
    assert LISTOPS_SYMBOLS[1:11] == tuple("0123456789") and LISTOPS_SYMBOLS[-1] == "]"
    assert len({tuple(t.tolist()) for t in data.tokens}) == 40  # no duplicates
    for tokens, label in data:
        assert tokens.dtype == torch.long and 500 < len(tokens) < 2000
        assert 1 <= int(tokens.min()) and int(tokens.max()) < 16
        text = listops_to_text(tokens)
        assert evaluate_listops(text) == label  # the stack evaluator, not the generator's reductions
        assert torch.equal(listops_tokenize(text), tokens)
        deepest, arities = depth_and_arities(parse_tree(text))
        assert deepest <= 10 and all(2 <= a <= 10 for a in arities)


@pytest.mark.parametrize(
    "text, value",
    [
        ("[MAX 4 3 [MIN 2 3 ] 1 0 ]", 4),
        ("[MIN 4 3 [MAX 2 9 ] 1 0 ]", 0),
        ("[MED 2 3 ]", 2),  # int(np.median([2, 3])) = int(2.5)
        ("[MED 2 5 ]", 3),  # int(3.5)
        ("[MED 9 1 5 ]", 5),
        ("[MED 0 9 9 0 ]", 4),
        ("[SM 9 9 9 ]", 7),
        ("[SM [MAX 7 8 ] [MED 1 2 3 4 ] 5 ]", 5),
        ("7", 7),
    ],
)
def test_evaluate_listops_table(text: str, value: int) -> None:
    assert evaluate_listops(text) == value
    assert evaluate_listops(listops_tokenize(text)) == value
    if text.startswith("[MED"):  # LRA's definition
        args = [int(s) for s in text.split()[1:-1]]
        assert value == int(np.median(args))


@pytest.mark.parametrize("bad", ["[MAX 1 2", "[MAX ]", "1 2", "[MAX 1 ] ]", "[MAX 1 x ]", ""])
def test_evaluate_listops_rejects_malformed_expressions(bad: str) -> None:
    with pytest.raises(ValueError):
        evaluate_listops(bad)


def reference_listops(rng: random.Random, depth: int, max_depth: int, max_args: int) -> list[str]:
    """LRA's recursive generator, written out plainly (depth-first, Python's random)."""
    if depth < max_depth and rng.random() <= 0.25:
        arity = rng.randint(2, max_args)
        children = [s for _ in range(arity) for s in reference_listops(rng, depth + 1, max_depth, max_args)]
        return [rng.choice(("[MIN", "[MAX", "[MED", "[SM"))] + children + ["]"]
    return [str(rng.randrange(10))]


def test_listops_follows_the_lra_distribution() -> None:
    """The breadth-first, early-abort sampler matches the plain recursive one in distribution
    (lengths by a two-sample KS test, values and operator frequencies loosely)."""
    stats = pytest.importorskip("scipy.stats")
    settings = dict(min_length=15, max_length=120, max_depth=5, max_args=6)
    ours = make_listops(3000, seed=4, **settings)
    rng = random.Random(0)
    reference: set[str] = set()
    while len(reference) < 3000:
        symbols = reference_listops(rng, 1, settings["max_depth"], settings["max_args"])
        if settings["min_length"] < len(symbols) < settings["max_length"]:
            reference.add(" ".join(symbols))
    reference_lengths = [len(t.split()) for t in reference]
    assert stats.ks_2samp(ours.lengths().numpy(), reference_lengths).pvalue > 0.001
    ours_values = np.bincount(ours.labels.numpy(), minlength=10) / 3000
    reference_values = np.bincount([evaluate_listops(t) for t in reference], minlength=10) / 3000
    assert np.abs(ours_values - reference_values).max() < 0.03
    operators = torch.cat(ours.tokens)
    counts = torch.bincount(operators[(operators >= 11) & (operators <= 14)] - 11, minlength=4).double()
    assert (counts / counts.sum() - 0.25).abs().max() < 0.02


def test_listops_is_deterministic_and_a_stream() -> None:
    kwargs = dict(min_length=20, max_length=80)
    a, b = make_listops(12, seed=3, **kwargs), make_listops(12, seed=3, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens)) and torch.equal(a.labels, b.labels)
    prefix = make_listops(5, seed=3, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(prefix.tokens, a.tokens[:5]))
    for other in (make_listops(12, seed=4, **kwargs), make_listops(12, seed=3, split="test", **kwargs)):
        assert not all(torch.equal(x, y) for x, y in zip(other.tokens, a.tokens))


def test_listops_errors() -> None:
    with pytest.raises(ValueError, match="max_length > min_length \\+ 1"):
        make_listops(1, min_length=10, max_length=11)
    with pytest.raises(ValueError, match="non-negative int, got -1"):
        make_listops(-1)
    with pytest.raises(ValueError, match="max_args to be an int >= 2, got 1"):
        make_listops(1, max_args=1)
    with pytest.raises(ValueError, match="the longest has 4 tokens"):
        make_listops(1, max_depth=2, max_args=2, min_length=4, max_length=200)
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        make_listops(1, split="val")
    with pytest.raises(ValueError, match="Unknown ListOps symbol '\\(' at position 0"):
        listops_tokenize("( [MAX 1 2 ] )")



# ----------------------------------------------------------------------------------------------
# byte-level text: UD English-EWT
# ----------------------------------------------------------------------------------------------


def ewt_dir() -> Path:
    for candidate in (os.environ.get("GRAPHATTN_SHARED_DATA"), Path(__file__).parents[2] / "shared" / "data"):
        if candidate and (Path(candidate) / "text" / "ud_english_ewt").is_dir():
            return Path(candidate) / "text" / "ud_english_ewt"
    pytest.skip("the shared data folder (../shared/data or $GRAPHATTN_SHARED_DATA) with text/ud_english_ewt is absent")


def sentences_of(path: Path) -> dict[str, str]:
    """sent_id -> text, read directly from a CoNLL-U file."""
    out, current = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# sent_id = "):
            current = line[len("# sent_id = "):].strip()
        elif line.startswith("# text = "):
            out[current] = line[len("# text = "):].strip()
    return out


def test_ewt_genre_labels_sizes_and_splits() -> None:
    root = ewt_dir()
    files = {"train": "en_ewt-ud-train.conllu", "valid": "en_ewt-ud-dev.conllu", "test": "en_ewt-ud-test.conllu"}
    doc_ids: dict[str, set[str]] = {}
    for split, name in files.items():
        data = load_ewt_genre(root, split)
        texts = sentences_of(root / name)
        assert data.vocab_size == BYTE_VOCAB_SIZE and data.class_names == EWT_GENRES
        assert (data.class_counts() > 0).all(), f"every genre is present in {split}"
        lengths = data.lengths()
        assert int(lengths.min()) >= 1000 and int(lengths.max()) <= 4000
        doc_ids[split] = set()
        for (tokens, label), chunk in zip(data, data.metadata):
            genre = EWT_GENRES[label]
            assert chunk.genre == genre and chunk.split == split and chunk.num_bytes == len(tokens)
            assert all(s.startswith(genre + "-") for s in chunk.sentence_ids)  # sent_id prefix = label
            assert all(d.startswith(genre + "-") for d in chunk.doc_ids)
            assert all(s in texts for s in chunk.sentence_ids)  # sentences of this split's file only
            assert tokens_to_text(tokens) == " ".join(texts[s] for s in chunk.sentence_ids)
            doc_ids[split].update(chunk.doc_ids)
    assert not (doc_ids["train"] & doc_ids["valid"]) and not (doc_ids["train"] & doc_ids["test"])
    assert not (doc_ids["valid"] & doc_ids["test"])


def test_ewt_whole_documents_and_forced_cuts() -> None:
    root = ewt_dir()
    documents = {d.doc_id: d for d in read_ewt_documents(root, "dev")}
    whole = load_ewt_genre(root, "dev", pack=False)
    assert {c.kind for c in whole.metadata} == {"document"}
    for (tokens, _), chunk in zip(whole, whole.metadata):
        (doc_id,) = chunk.doc_ids
        assert tokens_to_text(tokens) == documents[doc_id].text and 1000 <= len(tokens) <= 4000
    expected = sum(1000 <= len(d.text.encode()) <= 4000 for d in documents.values())
    assert len(whole) == expected
    small = load_ewt_genre(root, "dev", min_bytes=150, max_bytes=300)  # some sentences are longer than 300 bytes
    lengths = small.lengths()
    assert int(lengths.min()) >= 150 and int(lengths.max()) <= 300 and len(small) > len(whole)


CONLLU = """# newdoc id = reviews-001
# sent_id = reviews-001-0001
# text = Great food.
1	Great	great	ADJ	JJ	_	2	amod	_	_

# sent_id = reviews-001-0002
# text = Would come back.
1	Would	would	AUX	MD	_	0	root	_	_

# newdoc id = email-001
# sent_id = email-001-0001
# text = {long}
1	x	x	X	X	_	0	root	_	_

# newdoc id = reviews-002
# sent_id = reviews-002-0001
# text = Bad service, cold soup and a very long wait.
1	Bad	bad	ADJ	JJ	_	0	root	_	_

# newdoc id = reviews-003
# sent_id = reviews-003-0001
# text = Okay.
1	Okay	okay	INTJ	UH	_	0	root	_	_

"""


def write_treebank(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("en_ewt-ud-train.conllu", "en_ewt-ud-dev.conllu", "en_ewt-ud-test.conllu"):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_ewt_packing_on_a_tiny_treebank(tmp_path: Path) -> None:
    long_sentence = " ".join(["word"] * 20) + " é"  # 103 bytes, one two-byte character at the end
    root = write_treebank(tmp_path / "ewt", CONLLU.replace("{long}", long_sentence))
    documents = read_ewt_documents(root, "train")
    assert [d.doc_id for d in documents] == ["reviews-001", "email-001", "reviews-002", "reviews-003"]
    assert documents[0].text == "Great food. Would come back."
    data = load_ewt_genre(root, "train", min_bytes=30, max_bytes=60)
    chunks = [(c.genre, c.kind, c.doc_ids) for c in data.metadata]
    # the email (102 bytes) is cut at a character boundary into two parts; reviews-001 (28 bytes)
    # waits for the next short review: reviews-002 (44 bytes) is long enough on its own, so it is
    # joined with reviews-003 (5 bytes): 28 + 1 + 5 = 34 bytes
    assert chunks == [
        ("email", "part", ("email-001",)),
        ("email", "part", ("email-001",)),
        ("reviews", "document", ("reviews-002",)),
        ("reviews", "joined", ("reviews-001", "reviews-003")),
    ]
    assert tokens_to_text(torch.cat([data.tokens[0], data.tokens[1]])) == long_sentence
    assert all(30 <= len(t) <= 60 for t in data.tokens)
    joined = load_ewt_genre(root, "train", min_bytes=70, max_bytes=200)
    assert [(c.kind, c.doc_ids) for c in joined.metadata] == [
        ("document", ("email-001",)),
        ("joined", ("reviews-001", "reviews-002")),
    ]
    expected = "Great food. Would come back. Bad service, cold soup and a very long wait."
    assert tokens_to_text(joined.tokens[1]) == expected
    assert joined.labels.tolist() == [EWT_GENRES.index("email"), EWT_GENRES.index("reviews")]


def test_ewt_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No UD English-EWT folder at .*missing"):
        load_ewt_genre(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="test file of UD English-EWT at .*en_ewt-ud-test.conllu"):
        load_ewt_genre(tmp_path / "empty", "test")
    bad = write_treebank(tmp_path / "bad", "# newdoc id = blog-1\n# sent_id = blog-1-1\n# text = Hi.\n1\tHi\n\n")
    with pytest.raises(ValueError, match="line 1: id 'blog-1' does not start with a genre"):
        read_ewt_documents(bad)
    orphan = write_treebank(tmp_path / "orphan", "# sent_id = email-1-1\n# text = Hi.\n1\tHi\n\n")
    with pytest.raises(ValueError, match="before any '# newdoc id'"):
        read_ewt_documents(orphan)
    with pytest.raises(ValueError, match="min_bytes <= max_bytes"):
        load_ewt_genre(tmp_path, min_bytes=10, max_bytes=5)
    assert bytes_to_tokens("A").tolist() == [66] and tokens_to_text(torch.tensor([66, PAD])) == "A"


# ----------------------------------------------------------------------------------------------
# Pathfinder
# ----------------------------------------------------------------------------------------------


def point_segment(p, a, b) -> float:
    ax, ay = a
    bx, by = b
    px, py = p
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def paths_touching(marker, layout, reach: float) -> set[int]:
    return {
        int(path)
        for (a, b), path in zip(layout.dashes.tolist(), layout.dash_path.tolist())
        if point_segment(marker, a, b) <= reach
    }


def test_pathfinder_labels_from_the_layout_geometry() -> None:
    config = PathfinderConfig()
    data = make_pathfinder(24, seed=1)
    assert data.class_counts().tolist() == [12, 12]
    for (tokens, label), layout in zip(data, data.metadata):
        assert tokens.shape == (1024,) and 1 <= int(tokens.min()) and int(tokens.max()) <= 256
        # which paths each marker touches, measured on the dashes (markers sit on dash ends)
        touched = [paths_touching(m, layout, config.marker_radius) for m in layout.markers.tolist()]
        assert all(len(t) == 1 for t in touched), "a marker touches exactly one path"
        assert (touched[0] == touched[1]) == (label == 1)
        assert touched[0] | touched[1] <= {0, 1}  # markers only on the main paths
        if label == 0:  # the markers are as far apart as the ends of one main path (+- tolerance)
            spans = []
            for path in (0, 1):
                dashes = [d for d, p in zip(layout.dashes.tolist(), layout.dash_path.tolist()) if p == path]
                spans.append(math.dist(dashes[0][0], dashes[-1][1]))
            gap = math.dist(*layout.markers.tolist())
            assert min(abs(gap - span) for span in spans) <= config.distance_tolerance + 1e-9
        # different paths never come close: sample every dash densely
        samples = [
            (path, (a[0] + s * (b[0] - a[0]), a[1] + s * (b[1] - a[1])))
            for (a, b), path in zip(layout.dashes.tolist(), layout.dash_path.tolist())
            for s in np.linspace(0, 1, 7)
        ]
        for (a, b), path in zip(layout.dashes.tolist(), layout.dash_path.tolist()):
            assert min(point_segment(p, a, b) for q, p in samples if q != path) >= config.min_separation - 1e-9


def test_pathfinder_image_matches_its_layout() -> None:
    data = make_pathfinder(6, seed=2)
    rows, cols = np.mgrid[0:32, 0:32]
    for (tokens, _), layout in zip(data, data.metadata):
        image = tokens.reshape(32, 32).numpy() - 1
        for x, y in layout.markers.tolist():
            assert image[round(y), round(x)] >= 200  # the marker centre is bright
        dashes = layout.dashes.tolist()
        for r, c in zip(rows.ravel(), cols.ravel()):
            near = min(point_segment((c, r), a, b) for a, b in dashes)
            near = min([near] + [math.hypot(c - x, r - y) - 1.5 for x, y in layout.markers.tolist()])
            if near >= 1.0:  # further than the stroke's half width + the anti-aliasing ramp
                assert image[r, c] == 0


def test_pathfinder_is_deterministic_balanced_and_per_index() -> None:
    a = make_pathfinder(6, seed=5)
    b = make_pathfinder(3, seed=5, first_index=3)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens[3:], b.tokens)) and a.labels[3:].tolist() == b.labels.tolist()
    assert all(a.labels[i] != a.labels[i + 1] for i in (0, 2, 4))  # one of each in every pair
    assert not torch.equal(make_pathfinder(1, seed=6).tokens[0], a.tokens[0])
    coarse = make_pathfinder(2, seed=5, config=PathfinderConfig(levels=16))
    assert coarse.vocab_size == 17 and int(torch.stack(coarse.tokens).max()) <= 16


def test_pathfinder_errors() -> None:
    with pytest.raises(ValueError, match="PathfinderConfig.levels in \\[2, 65536\\], got 1"):
        PathfinderConfig(levels=1)
    with pytest.raises(ValueError, match="min_separation > line_width"):
        PathfinderConfig(min_separation=0.5)
    with pytest.raises(RuntimeError, match="No Pathfinder layout fit after 1 attempts"):
        make_pathfinder(1, config=PathfinderConfig(num_distractors=40, max_attempts=1))


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------


def holes(mask: np.ndarray) -> int:
    """Background components that do not touch the border."""
    ndimage = pytest.importorskip("scipy.ndimage")
    labels, count = ndimage.label(~mask)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    return len(set(range(1, count + 1)) - border)


def test_shapes_classes_by_independent_image_measurements() -> None:
    data = make_shapes(60, seed=0, noise_std=0.0)
    assert data.class_counts().tolist() == [6] * 10 and data.class_names == SHAPE_CLASSES
    for (tokens, label), parameters in zip(data, data.metadata):
        assert parameters.shape == SHAPE_CLASSES[label]
        image = tokens.reshape(32, 32).numpy().astype(float) - 1
        mask = image > (image.min() + image.max()) / 2
        name = SHAPE_CLASSES[label]
        assert holes(mask) == (1 if name in ("ring", "square_outline") else 0), name
        rows, cols = np.nonzero(mask)
        if name.startswith("triangle"):
            below_centre = rows.mean() > (rows.min() + rows.max()) / 2  # more mass at the base
            assert below_centre == (name == "triangle_up"), name
        if name in ("disc", "ellipse"):
            spread = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(float)))
            assert (spread[1] / spread[0] > 2.5) == (name == "ellipse"), name


def test_shapes_are_deterministic_noisy_and_in_range() -> None:
    a = make_shapes(12, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens[2:], make_shapes(10, seed=1, first_index=2).tokens))
    assert not torch.equal(a.tokens[0], make_shapes(1, seed=1, split="test").tokens[0])
    stacked = torch.stack(a.tokens)
    assert stacked.shape == (12, 1024) and 1 <= int(stacked.min()) and int(stacked.max()) <= 256
    clean = make_shapes(12, seed=1, noise_std=0.0)
    assert torch.equal(clean.labels, a.labels) and not torch.equal(torch.stack(clean.tokens), stacked)
    with pytest.raises(ValueError, match="image_size to be an int >= 16, got 8"):
        make_shapes(1, image_size=8)


def test_upsample_bilinear_matches_torch_and_quantize() -> None:
    image = np.random.default_rng(0).random((8, 8))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(image)[None, None], size=(32, 32), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(upsample_bilinear(image, 32), expected, atol=1e-12)
    assert quantize(np.array([-0.2, 0.0, 0.5, 1.0, 1.3]), 256).tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError, match="2-D image"):
        upsample_bilinear(np.zeros(4), 8)


def test_load_digits32_with_a_stand_in_for_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, size=(50, 8, 8)).astype(float)
    target = np.repeat(np.arange(10), 5)
    datasets = types.ModuleType("sklearn.datasets")
    datasets.load_digits = lambda: types.SimpleNamespace(images=images, target=target)
    sklearn = types.ModuleType("sklearn")
    sklearn.datasets = datasets
    monkeypatch.setitem(sys.modules, "sklearn", sklearn)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", datasets)
    train, test = load_digits32("train"), load_digits32("test")
    assert (len(train), len(test)) == (40, 10) and test.class_counts().tolist() == [1] * 10
    assert train.vocab_size == 257 and train.tokens[0].shape == (1024,)
    seen = {tuple(t.tolist()) for t in train.tokens}
    assert not any(tuple(t.tolist()) in seen for t in test.tokens)
    again = load_digits32("test")
    assert all(torch.equal(x, y) for x, y in zip(again.tokens, test.tokens))
    # every test image is its 8x8 original, upsampled and quantized
    originals = {tuple(quantize(upsample_bilinear(im / 16, 32)).ravel() + 1): int(t) for im, t in zip(images, target)}
    assert all(originals[tuple(t.tolist())] == label for t, label in test)
