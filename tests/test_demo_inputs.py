"""The input-kinds part of `graphattn demo`: the generated data is what it says, and the three
small models learn their tasks (text, speech, image) well above chance in a few seconds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from graphattn import cli
from graphattn.data.speech import log_mel
from graphattn.demo_inputs import TONE_CLASSES, TONE_SAMPLE_RATE, tagging_sentences, tone_words


def test_tagging_sentences_need_context() -> None:
    sentences = tagging_sentences(300, seed=3)
    assert sentences == tagging_sentences(300, seed=3)
    ambiguous = {"fish", "watch", "book", "run"}
    seen = {}
    for words, tags in sentences:
        assert len(words) == len(tags) and words[-1] == "." and tags[-1] == "PUNCT"
        for previous, word, tag in zip(["<s>"] + words, words, tags):
            if word in ambiguous:
                seen.setdefault(tag, set()).add(word)
                assert tag == ("VERB" if previous in ("they", "we", "you", "I") else "NOUN"), (words, tags)
    assert seen["NOUN"] == ambiguous and seen["VERB"] == ambiguous  # the same words, both tags


def test_tone_words_follow_their_class_order() -> None:
    waves, labels = tone_words(12, seed=1)
    assert len(waves) == 12 and labels.shape == (12,)
    for wave, label in zip(waves, labels.tolist()):
        assert 0.24 <= len(wave) / TONE_SAMPLE_RATE <= 0.6
        energies = log_mel(wave, TONE_SAMPLE_RATE, num_filters=24)  # [T, 24]
        loudest = energies.argmax(1).tolist()
        # runs of one loudest band (at least 4 frames = 40 ms) give the three tones in order
        runs = []
        for band in loudest:
            if runs and abs(runs[-1][0] - band) <= 1:
                runs[-1][1] += 1
            else:
                runs.append([band, 1])
        bands = [band for band, length in runs if length >= 4]
        assert len(bands) == 3, loudest
        assert tuple(np.argsort(np.argsort(bands)).tolist()) == TONE_CLASSES[label]


def test_demo_inputs_learn_every_kind(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    status = cli.main(["demo", "--quick", "--n", "64", "--repeats", "1", "--no-progress", "--device", "cpu",
                       "--out", str(out)])
    assert status == 0
    table = capsys.readouterr().out
    assert "a sentence, a recording and an image as sets of vectors" in table
    kinds = {row["kind"]: row for row in json.loads((out / "demo.json").read_text())["inputs"]}
    assert list(kinds) == ["text", "speech", "image"]
    assert kinds["text"]["test_accuracy"] >= 0.97  # ambiguous words need the window
    assert kinds["speech"]["test_accuracy"] >= 0.9  # chance: 1/6
    assert kinds["image"]["test_accuracy"] >= 0.8  # chance: 1/10
    assert kinds["image"]["nodes"] == 64 and kinds["image"]["edges"] == 22 * 22  # (2 + 3 * 6 + 2) ** 2 pixel pairs in 3x3 windows
    assert (out / "inputs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
