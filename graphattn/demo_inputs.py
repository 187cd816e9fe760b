"""``graphattn demo``, second part: a sentence, a recording and an image as sets of vectors.

One small task of each input kind, on data that needs no download, each trained for a few
seconds with the encoder over a sparse pattern:

* **text** -- sentences of a small generated grammar in which ``fish``, ``watch``, ``book`` and
  ``run`` are nouns after a determiner and verbs after a pronoun; every word is a node (word
  embedding + character CNN, :class:`~graphattn.models.SequenceTagger`), the pattern a local
  window, the output one part-of-speech tag per node;
* **speech** -- generated "words" of three tones in a class-specific order (with random
  durations, pitch jitter and noise, 8 kHz), turned into 25 ms / 10 ms log-mel frames
  (:func:`graphattn.data.speech.log_mel`); every frame is a node, the pattern a local window
  over time, the output one label per recording (:class:`~graphattn.models.SequenceClassifier`);
* **image** -- scikit-learn's 8x8 handwritten digits; every pixel is a node (its grey value and
  its row and column, :func:`graphattn.data.image.pixel_features`), the pattern the 3x3
  neighbourhood (``grid2d``), the output one label per image.

For each it reports nodes, features per node, edges, test accuracy and time, and draws
``inputs.png``: the attention of the trained models over a sentence, a spectrogram and a digit.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from graphattn.data.image import attention_map, load_digits_split, pixel_features
from graphattn.data.speech import log_mel
from graphattn.data.text import UPOS_TAGS, TaggedSentence, Vocabulary, collate_tagged, sequence_pattern, upos_ids, word_bytes
from graphattn.graph import AttentionGraph
from graphattn.models import SequenceClassifier, SequenceTagger, TransformerConfig, Vectors

__all__ = ["InputKindResult", "tagging_sentences", "tone_words", "run_input_kinds", "format_input_table"]


@dataclass
class InputKindResult:
    """One row of the input-kinds table."""

    kind: str
    data: str
    task: str
    nodes: float  # mean nodes per example
    features: int  # values per node before the encoder
    pattern: str
    edges: float  # mean attention edges per example
    train_examples: int
    test_examples: int
    steps: int
    test_accuracy: float
    seconds: float


# ------------------------------------------------------------------------------------- text
_DETERMINERS = ("the", "a", "every", "this")
_ADJECTIVES = ("small", "red", "quick", "old", "happy")
_PRONOUNS = ("they", "we", "you", "I")
_NOUNS = ("dog", "cat", "teacher", "river", "fish", "watch", "book", "run")  # the last four are verbs too
_VERBS_3RD = ("sees", "likes", "fishes", "watches", "books", "runs")
_VERBS_BASE = ("see", "like", "fish", "watch", "book", "run")


def tagging_sentences(count: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``count`` generated ``(words, UPOS tags)`` sentences: ``DET (ADJ) NOUN VERB DET (ADJ) NOUN
    .`` or ``PRON VERB DET (ADJ) NOUN .``, where ``fish``/``watch``/``book``/``run`` are NOUN
    after a determiner or adjective and VERB after a pronoun -- the tag needs the context."""
    rng = np.random.default_rng(seed)

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    def noun_phrase() -> tuple[list[str], list[str]]:
        words, tags = [pick(_DETERMINERS)], ["DET"]
        if rng.random() < 0.5:
            words.append(pick(_ADJECTIVES))
            tags.append("ADJ")
        return words + [pick(_NOUNS)], tags + ["NOUN"]

    out = []
    for _ in range(count):
        if rng.random() < 0.5:
            words, tags = noun_phrase()
            words, tags = words + [pick(_VERBS_3RD)], tags + ["VERB"]
        else:
            words, tags = [pick(_PRONOUNS), pick(_VERBS_BASE)], ["PRON", "VERB"]
        obj_words, obj_tags = noun_phrase()
        out.append((words + obj_words + ["."], tags + obj_tags + ["PUNCT"]))
    return out


# ------------------------------------------------------------------------------------- speech
TONE_SAMPLE_RATE = 8000
_TONES_HZ = (400.0, 900.0, 1800.0)
TONE_CLASSES = ((0, 1, 2), (2, 1, 0), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1))
"""The order of the three tones of every class: a class is told by order, not by content."""


def tone_words(count: int, seed: int = 0) -> tuple[list[np.ndarray], Tensor]:
    """``count`` generated recordings (float64 waveforms at 8 kHz, 0.3-0.6 s) and their class
    ids ``[count]``: three tones in the class's order (:data:`TONE_CLASSES`), each 80-200 ms,
    pitch jittered by up to 5%, with white noise."""
    rng = np.random.default_rng(seed)
    waves, labels = [], []
    for _ in range(count):
        label = int(rng.integers(len(TONE_CLASSES)))
        parts = []
        for tone in TONE_CLASSES[label]:
            samples = int(rng.uniform(0.08, 0.2) * TONE_SAMPLE_RATE)
            frequency = _TONES_HZ[tone] * rng.uniform(0.95, 1.05)
            t = np.arange(samples) / TONE_SAMPLE_RATE
            parts.append(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)))
        wave = np.concatenate(parts)
        waves.append(wave + 0.05 * rng.standard_normal(len(wave)))
        labels.append(label)
    return waves, torch.tensor(labels)


def _frames_batch(features: list[Tensor]) -> Vectors:
    lengths = torch.tensor([len(f) for f in features])
    batch = torch.zeros(len(features), int(lengths.max()), features[0].size(1))
    for row, f in enumerate(features):
        batch[row, : len(f)] = f
    return Vectors(batch, lengths)


# ------------------------------------------------------------------------------------- training
def _train(model: torch.nn.Module, steps: int, batch_fn: Callable[[torch.Generator], Tensor], lr: float, seed: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        loss = batch_fn(generator)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


def _mean_edges(pattern: str, lengths: Tensor) -> float:
    """Attention edges per example of ``pattern`` over sequences of ``lengths`` (the graph the
    encoder builds for the batch; no forward pass needed)."""
    return sequence_pattern(pattern, lengths).num_edges / len(lengths)


def _text_kind(steps: int, seed: int) -> tuple[InputKindResult, dict]:
    started = time.perf_counter()
    train_sentences, test_sentences = tagging_sentences(600, seed), tagging_sentences(200, seed + 1)
    vocabulary = Vocabulary.build((words for words, _ in train_sentences), min_frequency=1)

    def examples(sentences):
        return [TaggedSentence(vocabulary.encode(w), upos_ids(t), word_bytes(w)) for w, t in sentences]

    train, test = examples(train_sentences), examples(test_sentences)
    pattern = "local(window=2)"
    config = TransformerConfig(vocab_size=len(vocabulary), d_model=32, num_heads=2, num_layers=2, ff_dim=64,
                               dropout=0.0, position="relative", encoder_pattern=pattern)
    torch.manual_seed(seed)
    model = SequenceTagger(config, 17, char_filters=16)

    def loss(generator: torch.Generator) -> Tensor:
        batch = collate_tagged([train[int(i)] for i in torch.randint(len(train), (32,), generator=generator)])
        return model.loss(batch.ids, batch.chars, batch.labels)

    _train(model, steps, loss, 3e-3, seed)
    batch = collate_tagged(test)
    with torch.no_grad():
        predicted = model(batch.ids, batch.chars).argmax(-1)
    real = batch.labels != -100
    accuracy = float(((predicted == batch.labels) & real).sum() / real.sum())
    graph, weights = model.attention_weights(batch.ids[:1], batch.chars[:1])[-1]
    lengths = batch.lengths.float()
    result = InputKindResult(
        "text", "generated sentences (a small grammar)", "a part-of-speech tag per word", float(lengths.mean()),
        model.encoder.config.input_features, pattern, _mean_edges(pattern, batch.lengths),
        len(train), len(test), steps, accuracy, time.perf_counter() - started,
    )
    words = test_sentences[0][0]
    tags = [UPOS_TAGS[int(i)] for i in predicted[0, : len(words)]]
    return result, {"words": words, "tags": tags, "graph": graph, "weights": weights}


def _speech_kind(steps: int, seed: int) -> tuple[InputKindResult, dict]:
    started = time.perf_counter()
    waves, labels = tone_words(720, seed)
    features = [torch.from_numpy(log_mel(w, TONE_SAMPLE_RATE, num_filters=24)).float() for w in waves]
    features = [(f - f.mean(0)) / (f.std(0) + 1e-5) for f in features]
    train_idx, test_idx = range(600), range(600, 720)
    pattern = "local(window=4)"
    config = TransformerConfig(vocab_size=4, input_features=24, d_model=32, num_heads=2, num_layers=2, ff_dim=64,
                               dropout=0.0, position="sinusoidal", encoder_pattern=pattern)
    torch.manual_seed(seed)
    model = SequenceClassifier(config, len(TONE_CLASSES))

    def loss(generator: torch.Generator) -> Tensor:
        chosen = torch.randint(600, (32,), generator=generator).tolist()
        return torch.nn.functional.cross_entropy(model(_frames_batch([features[i] for i in chosen])), labels[chosen])

    _train(model, steps, loss, 3e-3, seed)
    test = _frames_batch([features[i] for i in test_idx])
    with torch.no_grad():
        accuracy = float((model(test).argmax(-1) == labels[list(test_idx)]).float().mean())
    example = test_idx[0]
    graph, weights = model.encoder.attention_weights(_frames_batch([features[example]]))[-1]
    result = InputKindResult(
        "speech", "generated tone words, 8 kHz", "a class per recording", float(test.lengths.float().mean()), 24, pattern,
        _mean_edges(pattern, test.lengths), len(train_idx), len(test_idx), steps,
        accuracy, time.perf_counter() - started,
    )
    return result, {"spectrogram": features[example], "graph": graph, "weights": weights,
                    "label": TONE_CLASSES[int(labels[example])]}


def _image_kind(steps: int, seed: int) -> tuple[InputKindResult, dict]:
    started = time.perf_counter()
    split = load_digits_split()
    mean, std = split.train.images.mean(), split.train.images.std()
    train_nodes = pixel_features((split.train.images - mean) / std)  # [N, 64, 1 + 8 + 8]
    test_nodes = pixel_features((split.test.images - mean) / std)
    pattern = "grid2d(width=8, radius=1)"
    config = TransformerConfig(vocab_size=4, input_features=train_nodes.size(-1), d_model=32, num_heads=2,
                               num_layers=3, ff_dim=64, dropout=0.0, position="none", norm_first=True,
                               encoder_pattern=pattern)
    torch.manual_seed(seed)
    model = SequenceClassifier(config, 10)

    def loss(generator: torch.Generator) -> Tensor:
        chosen = torch.randint(len(train_nodes), (64,), generator=generator)
        return torch.nn.functional.cross_entropy(model(train_nodes[chosen]), split.train.labels[chosen])

    _train(model, steps, loss, 3e-3, seed)
    with torch.no_grad():
        accuracy = float((model(test_nodes).argmax(-1) == split.test.labels).float().mean())
    graph, weights = model.encoder.attention_weights(test_nodes[:1])[0]
    result = InputKindResult(
        "image", "scikit-learn digits, 8x8", "a class per image", 64.0, train_nodes.size(-1), pattern,
        _mean_edges(pattern, torch.full((len(test_nodes),), test_nodes.size(1))), len(train_nodes),
        len(test_nodes), steps, accuracy, time.perf_counter() - started,
    )
    return result, {"image": split.test.images[0, 0], "graph": graph, "weights": weights}


def run_input_kinds(*, quick: bool = False, seed: int = 0, out: Path | None = None) -> list[InputKindResult]:
    """Train and test the three small tasks; with ``out``, draw ``out/inputs.png``."""
    steps = {"text": 150, "speech": 150, "image": 300} if quick else {"text": 300, "speech": 300, "image": 600}
    results, shown = [], {}
    for kind, run in (("text", _text_kind), ("speech", _speech_kind), ("image", _image_kind)):
        result, shown[kind] = run(steps[kind], seed)
        results.append(result)
    if out is not None:
        _plot(shown, Path(out) / "inputs.png")
    return results


def format_input_table(results: list[InputKindResult]) -> str:
    """The results as an aligned text table."""
    header = f"{'kind':<8}{'task':<31}{'nodes':>7}{'feat':>6}  {'pattern':<27}{'edges':>7}{'test acc':>10}{'time':>8}"
    lines = ["graphattn demo: a sentence, a recording and an image as sets of vectors (trained a few seconds each)",
             header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.kind:<8}{r.task:<31}{r.nodes:>7.1f}{r.features:>6}  {r.pattern:<27}{r.edges:>7.0f}"
            f"{100 * r.test_accuracy:>9.1f}%{r.seconds:>7.1f}s"
        )
    lines.append("nodes / edges: mean per example; feat: values per node before the encoder (text: word + characters)")
    return "\n".join(lines)


def _dense(graph: AttentionGraph, weights: Tensor, n: int) -> Tensor:
    dense = torch.zeros(n, n)
    dense[graph.row, graph.col] = weights.mean(-1).float()
    return dense


def _plot(shown: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 5.2))
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 2))
    text = shown["text"]
    n = len(text["words"])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(_dense(text["graph"], text["weights"], n), cmap="viridis")
    ax.set_xticks(range(n), text["words"], rotation=90)
    ax.set_yticks(range(n), [f"{w} ({t})" for w, t in zip(text["words"], text["tags"])])
    ax.set_title("text: word attention, last layer\n(rows: words with their predicted tag)", fontsize=10)

    speech = shown["speech"]
    frames = speech["spectrogram"]
    ax = fig.add_subplot(grid[0, 1])
    ax.imshow(frames.T, origin="lower", aspect="auto", cmap="magma")
    ax.set_title(f"speech: log-mel frames of a tone word (order {speech['label']})", fontsize=10)
    ax.set_ylabel("mel band")
    ax.set_xticks([])
    ax = fig.add_subplot(grid[1, 1])
    ax.imshow(_dense(speech["graph"], speech["weights"], len(frames)), aspect="auto", cmap="viridis")
    ax.set_xlabel("key frame (10 ms)")
    ax.set_ylabel("query frame")
    ax.set_title("last-layer attention over frames (local window)", fontsize=9)

    image = shown["image"]
    side = image["image"].size(-1)
    ax = fig.add_subplot(grid[:, 2])
    queries = ((side // 2 - 1, side // 2), (1, 1))
    overlay = sum(attention_map(image["graph"], image["weights"], q, side, side) for q in queries)
    ax.imshow(image["image"], cmap="gray_r")
    ax.imshow(overlay, cmap="viridis", alpha=0.6)
    for row, col in queries:
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, color="red", lw=2))
    ax.set_title("image: first-layer attention of two pixels (red)\nover their 3x3 neighbourhood (grid2d)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(results: list[InputKindResult]) -> list[dict]:
    """The results as JSON-ready dicts."""
    return [{k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(r).items()}
            for r in results]
