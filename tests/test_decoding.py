"""Tests for graphattn.decoding: generate() against independent references.

Models: a fixed random n-gram log-probability table (state = the last tokens) and a tiny float64
GRU decoder (state = one hidden vector per row). References, written independently of the
library: a per-example Python greedy loop, a per-example Python re-derivation of Hugging Face's
BeamSearchScorer / BeamHypotheses, an exhaustive search over all sequences, and hand-computed
processor tables.
"""
from __future__ import annotations

import math

import pytest
import torch

from graphattn import decoding
from graphattn.decoding import (
    Decodable,
    DecodingStart,
    GenerateOutput,
    apply_min_length,
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    generate,
)

NEG_INF = -math.inf


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


class NGramModel:
    """Next-token logits from a fixed table indexed by the last ``order - 1`` tokens of the
    context (index V = before the start). Prompts: a list of token lists."""

    def __init__(self, table: torch.Tensor, eos_id: int | None = None, pad_id: int | None = None) -> None:
        self.table = table  # [V + 1] * (order - 1) + [V]
        self.order = table.dim()
        self.vocab_size = table.shape[-1]
        self.eos_id, self.pad_id = eos_id, pad_id
        self.step_rows: list[int] = []
        self.reorder_indices: list[torch.Tensor] = []

    def next_logits(self, context: list[int]) -> torch.Tensor:
        """The reference path: logits of the token after ``context``, from the table directly."""
        key = [self.vocab_size] * (self.order - 1) + list(context)
        return self.table[tuple(key[len(key) - (self.order - 1):])]

    def start_decoding(self, prompts: list[list[int]], *, max_new_tokens: int) -> DecodingStart:
        width = max(len(p) for p in prompts)
        prefix = torch.full((len(prompts), width), -1, dtype=torch.long)  # padding that is no token
        for i, p in enumerate(prompts):
            prefix[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        state = torch.tensor(
            [([self.vocab_size] * (self.order - 1) + list(p))[-(self.order - 1):] for p in prompts], dtype=torch.long
        )
        return DecodingStart(self._lookup(state), state, prefix, lengths)

    def decode_step(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert tokens.dtype == torch.long and tokens.shape == state.shape[:1]
        self.step_rows.append(tokens.numel())
        state = torch.cat([state[:, 1:], tokens[:, None]], dim=1)
        return self._lookup(state), state

    def reorder_state(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        self.reorder_indices.append(index.clone())
        return state[index]

    def _lookup(self, state: torch.Tensor) -> torch.Tensor:
        return self.table[tuple(state.T)]


def random_table(order: int, vocab: int, seed: int, eos: int | None = None, eos_bias: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    table = 2.0 * torch.randn([vocab + 1] * (order - 1) + [vocab], generator=g, dtype=torch.float64)
    if eos is not None:
        table[..., eos] += eos_bias
    return table


class GRUModel(torch.nn.Module):
    """A tiny float64 GRU decoder: prompt -> hidden state, one hidden vector per row."""

    def __init__(self, vocab: int, hidden: int, eos_id: int, seed: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden, dtype=torch.float64)
        self.cell = torch.nn.GRUCell(hidden, hidden, dtype=torch.float64)
        self.out = torch.nn.Linear(hidden, vocab, dtype=torch.float64)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
            self.out.bias[eos_id] += 1.5
        self.eos_id, self.pad_id = eos_id, 0

    def start_decoding(self, prompts: list[list[int]], *, max_new_tokens: int) -> DecodingStart:
        width = max(len(p) for p in prompts)
        prefix = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, p in enumerate(prompts):
            prefix[i, : len(p)] = torch.tensor(p)
        lengths = torch.tensor([len(p) for p in prompts])
        h = torch.zeros(len(prompts), self.cell.hidden_size, dtype=torch.float64)
        for t in range(width):
            h = torch.where((t < lengths)[:, None], self.cell(self.embed(prefix[:, t]), h), h)
        return DecodingStart(self.out(h), h, prefix, lengths)

    def decode_step(self, tokens: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(self.embed(tokens), h)
        return self.out(h), h

    def reorder_state(self, h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return h[index]


# ---------------------------------------------------------------------------------------------
# references (plain Python, one example at a time)
# ---------------------------------------------------------------------------------------------


def reference_process(scores, context, generated, *, eos=None, min_length=0, min_new_tokens=0,
                      repetition_penalty=1.0, no_repeat_ngram_size=0):
    s = scores.clone()
    if repetition_penalty != 1.0:
        for token in set(context):
            s[token] = s[token] * repetition_penalty if s[token] < 0 else s[token] / repetition_penalty
    n = no_repeat_ngram_size
    if n and len(context) >= n - 1:
        last = tuple(context[len(context) - (n - 1):])
        for i in range(len(context) - n + 1):
            if tuple(context[i:i + n - 1]) == last:
                s[context[i + n - 1]] = NEG_INF
    if eos is not None and (len(context) < min_length or generated < min_new_tokens):
        s[eos] = NEG_INF
    return s


def reference_top_k(scores, k):
    kth = sorted(scores.tolist(), reverse=True)[min(k, len(scores)) - 1]
    return torch.tensor([v if v >= kth else NEG_INF for v in scores.tolist()], dtype=scores.dtype)


def reference_top_p(scores, p):
    """Keep a token iff the tokens strictly more probable than it have mass < p."""
    probs = scores.double().softmax(-1).tolist()
    keep = [sum(q for q in probs if q > probs[v]) < p for v in range(len(probs))]
    return torch.tensor([v if k else NEG_INF for v, k in zip(scores.tolist(), keep)], dtype=scores.dtype)


def argmax_first(values):
    best = max(values.tolist())
    return values.tolist().index(best)


def reference_greedy(model, prompt, max_new_tokens, eos, **processors):
    context, out, total = list(prompt), [], 0.0
    for step in range(max_new_tokens):
        s = reference_process(model.next_logits(context).double(), context, step, eos=eos, **processors)
        token = argmax_first(s)
        total += float(s.log_softmax(-1)[token])
        out.append(token)
        context.append(token)
        if token == eos:
            break
    return out, total


def reference_beam(model, prompt, *, num_beams, max_new_tokens, eos, length_penalty, early_stopping,
                   num_return_sequences, **processors):
    """Hugging Face's BeamSearchScorer semantics for one example, written as plainly as possible."""
    k = num_beams
    beams = [(0.0, [])] + [(-1e9, [])] * (k - 1)  # (sum of log-probs, generated tokens)
    heap = []  # (score, tokens), insertion order

    def add(tokens, total, length):
        score = total / length ** length_penalty
        if len(heap) < k or score > min(h[0] for h in heap):
            heap.append((score, tokens))
            if len(heap) > k:
                worst = min(range(len(heap)), key=lambda i: (heap[i][0], i))
                del heap[worst]

    done = False
    for step in range(max_new_tokens):
        candidates = []
        for b, (total, tokens) in enumerate(beams):
            context = list(prompt) + tokens
            logprobs = model.next_logits(context).double().log_softmax(-1)
            s = reference_process(logprobs, context, step, eos=eos, **processors)
            candidates += [(total + float(s[v]), b, v) for v in range(len(s))]
        top = sorted(candidates, key=lambda c: -c[0])[: 2 * k]
        next_beams = []
        for rank, (total, b, v) in enumerate(top):
            if v == eos:
                if rank < k:
                    add(beams[b][1] + [v], total, step + 1)
            else:
                next_beams.append((total, beams[b][1] + [v]))
            if len(next_beams) == k:
                break
        if len(heap) == k:
            if early_stopping is True:
                done = True
            else:
                length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else step + 1
                done = min(h[0] for h in heap) >= top[0][0] / length ** length_penalty
        beams = next_beams
        if done:
            break
    if not done:
        for total, tokens in beams:
            add(tokens, total, max_new_tokens)
    return sorted(heap, key=lambda h: h[0], reverse=True)[:num_return_sequences]


def exhaustive(model, prompt, max_new_tokens, eos, length_penalty):
    """Every sequence (ending at EOS or at max_new_tokens) with its length-normalized score."""
    results = []

    def extend(tokens, total):
        if tokens and (tokens[-1] == eos or len(tokens) == max_new_tokens):
            results.append((total / len(tokens) ** length_penalty, tokens))
            return
        logprobs = model.next_logits(list(prompt) + tokens).double().log_softmax(-1)
        for v in range(len(logprobs)):
            extend(tokens + [v], total + float(logprobs[v]))

    extend([], 0.0)
    return sorted(results, key=lambda r: r[0], reverse=True)


def rows_of(out: GenerateOutput, row: int) -> list[int]:
    return out.sequences[row, : int(out.lengths[row])].tolist()


def assert_batch_invariant(batch: GenerateOutput, singles: list[GenerateOutput], copies: int, pad: int) -> None:
    for i, single in enumerate(singles):
        rows = slice(i * copies, (i + 1) * copies)
        width = single.sequences.shape[1]
        assert torch.equal(batch.lengths[rows], single.lengths)
        assert torch.equal(batch.sequences[rows, :width], single.sequences)
        assert (batch.sequences[rows, width:] == pad).all()
        torch.testing.assert_close(batch.scores[rows], single.scores, rtol=1e-9, atol=1e-9)


PROMPTS = [[1], [2, 3, 4], [5, 0], [6, 6, 6, 1, 2], [3, 3], [0, 1, 2, 3, 4, 5, 6]]


# ---------------------------------------------------------------------------------------------
# protocol
# ---------------------------------------------------------------------------------------------


def test_models_implement_the_protocol():
    assert isinstance(NGramModel(random_table(2, 4, 0)), Decodable)
    assert isinstance(GRUModel(5, 4, 4, 0), Decodable)
    assert not isinstance(object(), Decodable)


# ---------------------------------------------------------------------------------------------
# processors against hand-computed tables
# ---------------------------------------------------------------------------------------------


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores_of_seen_tokens():
    scores = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0], [1.0, -2.0, 0.5, 3.0, 0.0]])
    context = torch.tensor([[0, 1, 1, 4], [3, 9, 9, 9]])  # row 1: one real token, then padding
    out = apply_repetition_penalty(scores, context, torch.tensor([4, 1]), 2.0)
    expected = torch.tensor([[0.5, -4.0, 0.5, 3.0, 0.0], [1.0, -2.0, 0.5, 1.5, 0.0]])
    assert torch.equal(out, expected)
    below_one = apply_repetition_penalty(scores[:1], context[:1], torch.tensor([4]), 0.5)
    assert torch.equal(below_one, torch.tensor([[2.0, -1.0, 0.5, 3.0, 0.0]]))
    assert torch.equal(scores[0], torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0]))  # input untouched


@pytest.mark.parametrize(
    ("context", "n", "banned"),
    [
        ([1, 2, 3, 1, 2], 3, {3}),
        ([1, 2, 3, 1, 2], 2, {3}),
        ([1, 2, 1, 3, 1], 2, {2, 3}),
        ([1, 2, 1, 3, 1], 1, {1, 2, 3}),
        ([4, 4, 4], 2, {4}),
        ([4, 4, 4], 3, {4}),
        ([4, 4, 4], 4, set()),
        ([1, 2], 3, set()),  # no complete trigram yet
        ([1], 3, set()),  # context shorter than n - 1
        ([], 2, set()),
        ([0, 1, 2, 0, 1, 5, 0, 1], 3, {2, 5}),
    ],
)
def test_no_repeat_ngram_bans_exactly_the_completing_tokens(context, n, banned):
    width = 10
    padded = torch.full((2, width), 7)  # padding value 7 must not count as a token
    padded[0, : len(context)] = torch.tensor(context, dtype=torch.long)
    lengths = torch.tensor([len(context), 0])
    out = apply_no_repeat_ngram(torch.zeros(2, 8), padded, lengths, n)
    assert {v for v in range(8) if out[0, v] == NEG_INF} == banned
    assert torch.equal(out[1], torch.zeros(8))
    reference = reference_process(torch.zeros(8), context, 0, no_repeat_ngram_size=n)
    assert torch.equal(out[0], reference)


def test_min_length_blocks_eos_only_for_short_rows():
    out = apply_min_length(torch.ones(3, 4), torch.tensor([0, 2, 3]), 3, eos_token_id=1)
    expected = torch.ones(3, 4)
    expected[0, 1] = expected[1, 1] = NEG_INF
    assert torch.equal(out, expected)


def test_temperature_divides():
    assert torch.equal(apply_temperature(torch.tensor([[3.0, -1.5]]), 1.5), torch.tensor([[2.0, -1.0]]))


@pytest.mark.parametrize(
    ("scores", "k", "kept"),
    [
        ([1.0, 3.0, 2.0, 0.0], 2, {1, 2}),
        ([1.0, 3.0, 3.0, 2.0], 2, {1, 2}),
        ([1.0, 3.0, 3.0, 2.0], 1, {1, 2}),  # tie with the best: both kept
        ([1.0, 2.0, 2.0, 2.0], 2, {1, 2, 3}),  # ties at the k-th value kept
        ([1.0, 2.0, 0.0, 5.0], 10, {0, 1, 2, 3}),  # k > V: everything
        ([NEG_INF, 2.0, NEG_INF, NEG_INF], 2, {0, 1, 2, 3}),  # k-th best is -inf: nothing removed
    ],
)
def test_top_k_keeps_exactly_the_right_set(scores, k, kept):
    out = apply_top_k(torch.tensor([scores]), k)[0]
    assert {v for v in range(4) if out[v] != NEG_INF or scores[v] == NEG_INF} == kept
    kept_values = [v for v in range(4) if v in kept]
    assert torch.equal(out[kept_values], torch.tensor(scores)[kept_values])


def test_top_k_min_tokens_to_keep():
    out = apply_top_k(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), 1, min_tokens_to_keep=3)
    assert out[0].tolist() == [4.0, 3.0, 2.0, NEG_INF]


@pytest.mark.parametrize(
    ("probs", "p", "kept"),
    [
        ([0.5, 0.3, 0.15, 0.05], 0.7, {0, 1}),
        ([0.5, 0.3, 0.15, 0.05], 0.85, {0, 1, 2}),
        ([0.5, 0.3, 0.15, 0.05], 0.9, {0, 1, 2}),
        ([0.5, 0.3, 0.15, 0.05], 0.97, {0, 1, 2, 3}),
        ([0.5, 0.3, 0.15, 0.05], 0.4, {0}),
        ([0.5, 0.3, 0.15, 0.05], 1e-6, {0}),  # min_tokens_to_keep = 1
        ([0.05, 0.15, 0.3, 0.5], 0.7, {2, 3}),  # order in the vocabulary does not matter
        ([0.4, 0.2, 0.2, 0.2], 0.5, {0, 1, 2, 3}),  # a tie at the boundary: all tied kept
        ([0.4, 0.2, 0.2, 0.2], 0.3, {0}),
        ([0.25, 0.25, 0.25, 0.25], 0.1, {0, 1, 2, 3}),
        ([0.6, 0.4, 0.0, 0.0], 0.95, {0, 1}),  # zero-probability tokens removed
    ],
)
def test_top_p_keeps_exactly_the_right_set(probs, p, kept):
    scores = torch.tensor([probs], dtype=torch.float64).log()
    out = apply_top_p(scores, p)[0]
    assert {v for v in range(4) if out[v] != NEG_INF} == kept
    assert torch.equal(out, reference_top_p(scores[0], p))


def test_top_p_min_tokens_to_keep_and_no_filtering_at_one():
    scores = torch.tensor([[0.7, 0.2, 0.06, 0.04]]).log()
    assert (apply_top_p(scores, 0.5, min_tokens_to_keep=3)[0] != NEG_INF).tolist() == [True, True, True, False]
    assert torch.equal(apply_top_p(scores, 1.0), scores)


def test_processors_match_reference_on_random_rows():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(20, 9, generator=g, dtype=torch.float64)
    context = torch.randint(0, 9, (20, 12), generator=g)
    lengths = torch.randint(0, 13, (20,), generator=g)
    for k in (1, 3, 9):
        for i in range(20):
            assert torch.equal(apply_top_k(scores, k)[i], reference_top_k(scores[i], k))
    for p in (0.3, 0.6, 0.9):
        for i in range(20):
            assert torch.equal(apply_top_p(scores, p)[i], reference_top_p(scores[i], p))
    for i in range(20):
        ctx = context[i, : lengths[i]].tolist()
        expected = reference_process(scores[i], ctx, 0, repetition_penalty=1.7)
        assert torch.equal(apply_repetition_penalty(scores, context, lengths, 1.7)[i], expected)
        for n in (1, 2, 3):
            expected = reference_process(scores[i], ctx, 0, no_repeat_ngram_size=n)
            assert torch.equal(apply_no_repeat_ngram(scores, context, lengths, n)[i], expected)


# ---------------------------------------------------------------------------------------------
# greedy
# ---------------------------------------------------------------------------------------------

GREEDY_PROCESSORS = [
    {},
    {"repetition_penalty": 1.3},
    {"repetition_penalty": 0.7, "no_repeat_ngram_size": 3},
    {"no_repeat_ngram_size": 2},
    {"no_repeat_ngram_size": 1},
    {"min_length": 6},
    {"min_new_tokens": 3},
]


@pytest.mark.parametrize("processors", GREEDY_PROCESSORS)
@pytest.mark.parametrize("order", [2, 3])
def test_greedy_matches_brute_force_argmax_loop(order, processors):
    model = NGramModel(random_table(order, 8, seed=order, eos=7, eos_bias=1.0), eos_id=7, pad_id=0)
    out = generate(model, PROMPTS, max_new_tokens=7, **processors)
    assert out.sequences.shape[1] == int(out.lengths.max()) <= 7
    for i, prompt in enumerate(PROMPTS):
        tokens, total = reference_greedy(model, prompt, 7, 7, **processors)
        assert rows_of(out, i) == tokens
        assert (out.sequences[i, len(tokens):] == 0).all()
        assert math.isclose(float(out.scores[i]), total, rel_tol=1e-12, abs_tol=1e-12)


def test_greedy_finished_rows_leave_the_batch_and_pad_after_eos():
    model = NGramModel(random_table(2, 8, seed=5, eos=7, eos_bias=1.5), eos_id=7, pad_id=-3)
    out = generate(model, PROMPTS, max_new_tokens=9)
    finished = out.sequences[torch.arange(len(PROMPTS)), out.lengths - 1] == 7
    assert finished.any() and (out.lengths < 9).any()
    assert ((out.lengths == 9) | finished).all()  # an unfinished row runs to max_new_tokens
    for i in range(len(PROMPTS)):
        assert (out.sequences[i, out.lengths[i]:] == -3).all()
        assert 7 not in out.sequences[i, : out.lengths[i] - 1].tolist()  # EOS only at the end
    # rows leave the batch as they finish: decode_step sees fewer and fewer rows
    assert model.step_rows == sorted(model.step_rows, reverse=True) and model.step_rows[-1] < len(PROMPTS)
    assert len(model.step_rows) == int(out.lengths.max()) - 1
    # the same results one example at a time
    singles = [generate(model, [p], max_new_tokens=9) for p in PROMPTS]
    assert_batch_invariant(out, singles, 1, pad=-3)


def test_no_eos_runs_to_max_new_tokens_and_pad_defaults():
    model = NGramModel(random_table(2, 8, seed=1))  # no eos_id, no pad_id
    out = generate(model, PROMPTS, max_new_tokens=5)
    assert out.sequences.shape == (len(PROMPTS), 5) and (out.lengths == 5).all()
    with_eos = NGramModel(random_table(2, 8, seed=1, eos=7, eos_bias=3.0), eos_id=7)
    out = generate(with_eos, PROMPTS, max_new_tokens=5)
    short = out.lengths < out.sequences.shape[1]
    assert short.any()
    assert (out.sequences[short][:, -1] == 7).all()  # pad defaults to the EOS id, as in Hugging Face


def test_min_length_counts_the_prefix_and_min_new_tokens_does_not():
    table = torch.zeros(6, 5, dtype=torch.float64)
    table[:, 4] = 5.0  # EOS (4) is always the best token
    model = NGramModel(table, eos_id=4, pad_id=0)
    prompts = [[1], [1, 2, 3]]
    out = generate(model, prompts, max_new_tokens=6, min_length=4)
    assert out.lengths.tolist() == [4, 2]  # EOS banned while prefix + generated < 4: 3 steps, 1 step
    out = generate(model, prompts, max_new_tokens=6, min_new_tokens=2)
    assert out.lengths.tolist() == [3, 3]
    out = generate(model, prompts, max_new_tokens=2, min_new_tokens=5)
    assert out.lengths.tolist() == [2, 2] and 4 not in out.sequences.tolist()


# ---------------------------------------------------------------------------------------------
# beam search
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 1.0, 2.0])
@pytest.mark.parametrize(("vocab", "steps"), [(4, 3), (3, 4)])
def test_never_with_an_unpruned_beam_finds_the_exhaustive_best(length_penalty, vocab, steps):
    eos = vocab - 1
    model = NGramModel(random_table(3, vocab, seed=11 + vocab, eos=eos, eos_bias=-0.5), eos_id=eos, pad_id=0)
    # wide enough that no partial hypothesis is ever pruned: (V - 1)^(T - 1) * V real candidates
    beams = (vocab - 1) ** (steps - 1) * vocab
    prompts = [[0], [1, 2]]
    out = generate(model, prompts, max_new_tokens=steps, num_beams=beams, num_return_sequences=3,
                   early_stopping="never", length_penalty=length_penalty)
    for i, prompt in enumerate(prompts):
        best = exhaustive(model, prompt, steps, eos, length_penalty)[:3]
        assert [rows_of(out, 3 * i + j) for j in range(3)] == [tokens for _, tokens in best]
        torch.testing.assert_close(out.scores[3 * i: 3 * i + 3], torch.tensor([s for s, _ in best], dtype=torch.float64))
        assert out.scores[3 * i] >= out.scores[3 * i + 1] >= out.scores[3 * i + 2]


def _false_misses_table() -> torch.Tensor:
    """Bigram table (V = 4, EOS = 3) where an early EOS fills the heap but a long sequence wins at
    length_penalty = 2 (see test_heuristic_early_stopping_can_miss_what_never_finds)."""
    rows = {
        0: [0.997, 0.0012, 0.0010, 0.0008],
        1: [0.0003, 0.0003, 0.0004, 0.999],
        2: [0.09, 0.095, 0.015, 0.80],
        3: [0.25, 0.25, 0.25, 0.25],
        4: [0.25, 0.25, 0.25, 0.25],
    }
    return torch.tensor([rows[i] for i in range(5)], dtype=torch.float64).log()


def test_heuristic_early_stopping_can_miss_what_never_finds():
    model = NGramModel(_false_misses_table(), eos_id=3, pad_id=0)
    kwargs = dict(max_new_tokens=4, num_beams=2, length_penalty=2.0)
    # step 1: [EOS] (score log .8) enters the heap; step 2: [1, EOS] is the best candidate, fills
    # the heap and is its worst: best / 2**2 == worst, so True and False both stop here.
    for early_stopping in (True, False):
        out = generate(model, [[2]], early_stopping=early_stopping, **kwargs)
        assert rows_of(out, 0) == [3]
        assert math.isclose(float(out.scores[0]), math.log(0.8), rel_tol=1e-12)
    # "never" bounds with max_new_tokens and continues: [0, 0, 0, 0] wins, the exhaustive optimum
    out = generate(model, [[2]], early_stopping="never", **kwargs)
    best_score, best_tokens = exhaustive(model, [2], 4, 3, 2.0)[0]
    assert best_tokens == [0, 0, 0, 0] == rows_of(out, 0)
    assert math.isclose(float(out.scores[0]), best_score, rel_tol=1e-12)
    assert best_score > math.log(0.8)


def test_heuristic_compares_with_the_best_candidate_of_the_step_eos_included():
    """BeamSearchScorer's is_done gets the best of the 2 * num_beams candidates, EOS ones included
    (not the best running beam, as transformers >= 4.50 does)."""
    rows = {
        0: [0.04, 0.03, 0.0001, 0.93],
        1: [0.75, 0.05, 0.0001, 0.20],
        2: [0.27, 0.23, 0.0001, 0.4999],
        3: [0.25, 0.25, 0.25, 0.25],
        4: [0.25, 0.25, 0.25, 0.25],
    }
    model = NGramModel(torch.tensor([rows[i] for i in range(5)], dtype=torch.float64).log(), eos_id=3, pad_id=0)
    out = generate(model, [[2]], max_new_tokens=5, num_beams=2, num_return_sequences=2, length_penalty=1.0)
    # step 2: candidates [0, EOS] (best, sum -1.382, enters the heap) and [1, 0] (best running beam,
    # sum -1.757). The heap {[3]: -0.693, [0, 3]: -0.691} is full; -0.693 < -1.382 / 2, so the example
    # is not done (it would be with -1.757 / 2) and step 3 finds [1, 0, EOS] = -1.830 / 3 = -0.610.
    assert [rows_of(out, 0), rows_of(out, 1)] == [[1, 0, 3], [0, 3]]
    torch.testing.assert_close(out.scores, torch.tensor([-0.6100429084487416, -0.6910020039094655], dtype=torch.float64))
    assert exhaustive(model, [2], 5, 3, 1.0)[0][1] == [1, 0, 3]


def test_never_with_negative_length_penalty_bounds_with_the_current_length():
    """length_penalty < 0 favours short hypotheses: a longer one scores at best best_sum * length,
    so "never" bounds with the current length (the max_new_tokens bound would stop too early)."""
    table = torch.full((5, 5, 4), 0.25, dtype=torch.float64)  # trigram, V = 4, EOS = 3
    table[4, 2] = torch.tensor([0.3, 0.1, 0.0001, 0.6])  # after the prompt [2]
    table[2, 0] = torch.tensor([0.9, 0.05, 0.0001, 0.05])
    table[2, 1] = torch.tensor([0.05, 0.04, 0.0001, 0.9])
    table[0, 0] = torch.tensor([0.1, 0.05, 0.0001, 0.8])
    model = NGramModel(table.log(), eos_id=3, pad_id=0)
    kwargs = dict(max_new_tokens=4, num_beams=2, num_return_sequences=2, length_penalty=-1.0)
    # step 2: heap {[3], [1, 3]: 2 * -2.408}; best candidate [0, 0]: sum -1.309, -1.309 * 2 > -4.816:
    # not done, and step 3 finds [0, 0, 3] = 3 * -1.532 (with * 4 it would have stopped)
    never = generate(model, [[2]], early_stopping="never", **kwargs)
    best = exhaustive(model, [2], 4, 3, -1.0)[:2]
    assert [rows_of(never, 0), rows_of(never, 1)] == [tokens for _, tokens in best] == [[3], [0, 0, 3]]
    torch.testing.assert_close(never.scores, torch.tensor([s for s, _ in best], dtype=torch.float64))
    done_at_once = generate(model, [[2]], early_stopping=True, **kwargs)  # stops with the first full heap
    assert [rows_of(done_at_once, 0), rows_of(done_at_once, 1)] == [[3], [1, 3]]


BEAM_PROCESSORS = [
    {},
    {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2},
    {"min_length": 5, "min_new_tokens": 2},
]


@pytest.mark.parametrize("processors", BEAM_PROCESSORS)
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize(("num_beams", "length_penalty"), [(2, 1.0), (3, 2.0), (3, 0.0), (2, -1.0)])
def test_beam_search_matches_reference_scorer(num_beams, length_penalty, early_stopping, processors):
    model = NGramModel(random_table(3, 8, seed=21, eos=7, eos_bias=1.0), eos_id=7, pad_id=0)
    copies = num_beams
    out = generate(model, PROMPTS, max_new_tokens=6, num_beams=num_beams, num_return_sequences=copies,
                   length_penalty=length_penalty, early_stopping=early_stopping, **processors)
    assert out.sequences.shape[0] == len(PROMPTS) * copies
    for i, prompt in enumerate(PROMPTS):
        expected = reference_beam(model, prompt, num_beams=num_beams, max_new_tokens=6, eos=7,
                                  length_penalty=length_penalty, early_stopping=early_stopping,
                                  num_return_sequences=copies, **processors)
        got = [rows_of(out, i * copies + j) for j in range(copies)]
        assert got == [tokens for _, tokens in expected]
        torch.testing.assert_close(
            out.scores[i * copies: (i + 1) * copies], torch.tensor([s for s, _ in expected], dtype=torch.float64)
        )
        assert out.lengths[i * copies: (i + 1) * copies].tolist() == [len(t) for _, t in expected]


def test_never_equals_running_every_beam_to_max_new_tokens():
    """Canonical beam search: stopping early never changes the result."""
    model = NGramModel(random_table(3, 8, seed=4, eos=7, eos_bias=2.0), eos_id=7, pad_id=0)
    stopped_early = []
    for length_penalty in (0.0, 0.5, 1.0, 2.0, -0.5):
        model.step_rows.clear()
        out = generate(model, PROMPTS, max_new_tokens=6, num_beams=3, num_return_sequences=3,
                       early_stopping="never", length_penalty=length_penalty)
        stopped_early.append(min(model.step_rows) < 3 * len(PROMPTS))
        for i, prompt in enumerate(PROMPTS):
            expected = _reference_without_stopping(model, prompt, length_penalty)
            assert [rows_of(out, 3 * i + j) for j in range(3)] == [t for _, t in expected]
            torch.testing.assert_close(out.scores[3 * i: 3 * i + 3], torch.tensor([s for s, _ in expected], dtype=torch.float64))
    assert stopped_early == [True, True, True, False, True]  # examples did leave early (not at 2.0)


def _reference_without_stopping(model, prompt, length_penalty):
    heap_size = 3
    beams = [(0.0, [])] + [(-1e9, [])] * 2
    finished = []
    for step in range(6):
        candidates = []
        for b, (total, tokens) in enumerate(beams):
            logprobs = model.next_logits(list(prompt) + tokens).double().log_softmax(-1)
            candidates += [(total + float(logprobs[v]), b, v) for v in range(8)]
        top = sorted(candidates, key=lambda c: -c[0])[:6]
        finished += [(t / (step + 1) ** length_penalty, beams[b][1] + [v])
                     for r, (t, b, v) in enumerate(top) if v == 7 and r < 3]
        beams = [(t, beams[b][1] + [v]) for t, b, v in top if v != 7][:3]
    finished += [(t / 6 ** length_penalty, tokens) for t, tokens in beams]
    return sorted(finished, key=lambda h: h[0], reverse=True)[:heap_size]


@pytest.mark.parametrize(("early_stopping", "length_penalty"), [(True, 1.0), (False, 1.0), (False, 2.0), ("never", 0.0)])
def test_one_beam_equals_greedy(early_stopping, length_penalty):
    model = NGramModel(random_table(3, 8, seed=8, eos=7, eos_bias=1.0), eos_id=7, pad_id=0)
    greedy = generate(model, PROMPTS, max_new_tokens=7)
    settings = decoding._validate_arguments(
        model, max_new_tokens=7, min_length=0, min_new_tokens=0, do_sample=False, num_beams=1,
        num_return_sequences=1, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
        no_repeat_ngram_size=0, length_penalty=length_penalty, early_stopping=early_stopping,
        eos_token_id=None, pad_token_id=None,
    )

    class Bar:
        def update(self, n):
            pass

    beam = decoding._beam_search(model, model.start_decoding(PROMPTS, max_new_tokens=7), settings, Bar())
    assert torch.equal(beam.sequences, greedy.sequences) and torch.equal(beam.lengths, greedy.lengths)
    if length_penalty == 0.0:
        torch.testing.assert_close(beam.scores, greedy.scores)


def test_beam_search_drops_done_examples_and_expands_with_repeat_interleave():
    model = NGramModel(random_table(2, 8, seed=2, eos=7, eos_bias=2.5), eos_id=7, pad_id=0)
    out = generate(model, PROMPTS, max_new_tokens=8, num_beams=2, early_stopping=True)
    assert torch.equal(model.reorder_indices[0], torch.arange(len(PROMPTS)).repeat_interleave(2))
    assert model.step_rows[0] <= 2 * len(PROMPTS) and model.step_rows[-1] < 2 * len(PROMPTS)
    assert all(rows % 2 == 0 for rows in model.step_rows)
    singles = [generate(model, [p], max_new_tokens=8, num_beams=2, early_stopping=True) for p in PROMPTS]
    assert_batch_invariant(out, singles, 1, pad=0)


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------


def _one_step_model(logits: list[float]) -> NGramModel:
    table = torch.tensor([logits] * (len(logits) + 1), dtype=torch.float64)
    return NGramModel(table)


def _chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(tokens, minlength=len(probs)).double()
    expected = probs * tokens.numel()
    support = expected > 0
    assert (counts[~support] == 0).all()
    return float(((counts[support] - expected[support]) ** 2 / expected[support]).sum())


LOGITS = [1.0, 0.2, -0.5, 2.0, 0.0, -1.0]


@pytest.mark.parametrize(
    ("warp", "reference"),
    [
        ({}, lambda s: s),
        ({"temperature": 0.6}, lambda s: s / 0.6),
        ({"temperature": 2.5}, lambda s: s / 2.5),
        ({"top_k": 3}, lambda s: reference_top_k(s, 3)),
        ({"top_p": 0.8}, lambda s: reference_top_p(s, 0.8)),
        ({"temperature": 0.7, "top_k": 4, "top_p": 0.9}, lambda s: reference_top_p(reference_top_k(s / 0.7, 4), 0.9)),
    ],
)
def test_sample_frequencies_match_the_warped_softmax(warp, reference):
    model = _one_step_model(LOGITS)
    n = 20000
    out = generate(model, [[0]], max_new_tokens=1, do_sample=True, num_return_sequences=n, seed=1234, **warp)
    warped = reference(torch.tensor(LOGITS, dtype=torch.float64))
    probs = warped.softmax(-1)
    tokens = out.sequences[:, 0]
    # chi-square with at most 5 degrees of freedom: P(> 30) < 2e-5
    assert _chi_square(tokens, probs) < 30.0
    assert set(tokens.tolist()) <= {v for v in range(6) if probs[v] > 0}  # excluded tokens never drawn
    torch.testing.assert_close(out.scores, probs.log()[tokens])  # log-prob of the drawn token


def test_multi_step_samples_respect_top_k_top_p_and_scores_are_drawn_log_probs():
    model = NGramModel(random_table(2, 8, seed=13, eos=7, eos_bias=0.5), eos_id=7, pad_id=0)
    warp = {"temperature": 0.8, "top_k": 4, "top_p": 0.7, "repetition_penalty": 1.2}
    out = generate(model, PROMPTS, max_new_tokens=6, do_sample=True, num_return_sequences=20,
                   seed=list(range(len(PROMPTS))), **warp)
    for row in range(out.sequences.shape[0]):
        context, total = list(PROMPTS[row // 20]), 0.0
        for step, token in enumerate(rows_of(out, row)):
            s = reference_process(model.next_logits(context).double(), context, step, eos=7, repetition_penalty=1.2)
            s = reference_top_p(reference_top_k(s / 0.8, 4), 0.7)
            assert s[token] != NEG_INF
            total += float(s.log_softmax(-1)[token])
            context.append(token)
        assert math.isclose(float(out.scores[row]), total, rel_tol=1e-9, abs_tol=1e-9)


def test_same_seed_same_samples():
    model = GRUModel(12, 8, eos_id=11, seed=0)
    prompts = [[1, 2], [3], [4, 5, 6]]
    a = generate(model, prompts, max_new_tokens=8, do_sample=True, seed=7, num_return_sequences=2)
    b = generate(model, prompts, max_new_tokens=8, do_sample=True, seed=7, num_return_sequences=2)
    c = generate(model, prompts, max_new_tokens=8, do_sample=True, seed=8, num_return_sequences=2)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.scores, b.scores)
    assert a.sequences.shape != c.sequences.shape or not torch.equal(a.sequences, c.sequences)
    d = generate(model, prompts, max_new_tokens=8, do_sample=True, seed=[1, 2, 3])
    e = generate(model, prompts, max_new_tokens=8, do_sample=True, seed=[1, 2, 3])
    assert torch.equal(d.sequences, e.sequences)
    torch.manual_seed(0)
    f = generate(model, prompts, max_new_tokens=8, do_sample=True)
    torch.manual_seed(0)
    g = generate(model, prompts, max_new_tokens=8, do_sample=True)
    assert torch.equal(f.sequences, g.sequences)


def test_per_example_generator_draw_order():
    """Copies of an example draw from its generator in order: copy 0, copy 1, ... (Gumbel-max)."""
    model = _one_step_model(LOGITS)
    out = generate(model, [[0], [1]], max_new_tokens=1, do_sample=True, num_return_sequences=3, seed=[5, 6])
    logprobs = torch.tensor(LOGITS, dtype=torch.float64).log_softmax(-1)
    for example, seed in enumerate((5, 6)):
        g = torch.Generator().manual_seed(seed)
        for copy in range(3):
            gumbel = -torch.log(-torch.log(torch.rand(6, generator=g, dtype=torch.float64)))
            assert int(out.sequences[3 * example + copy, 0]) == int((logprobs + gumbel).argmax())


def test_sampling_expands_examples_with_repeat_interleave():
    model = NGramModel(random_table(2, 8, seed=3, eos=7), eos_id=7, pad_id=0)
    generate(model, PROMPTS[:3], max_new_tokens=4, do_sample=True, num_return_sequences=4, seed=0)
    assert torch.equal(model.reorder_indices[0], torch.arange(3).repeat_interleave(4))


# ---------------------------------------------------------------------------------------------
# batch invariance: batch 1 == batch 64
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gru_batch():
    model = GRUModel(12, 8, eos_id=11, seed=1)
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(1, 7, (64,), generator=g).tolist()
    prompts = [torch.randint(0, 11, (n,), generator=g).tolist() for n in lengths]
    return model, prompts


@pytest.mark.parametrize(
    ("kwargs", "copies"),
    [
        ({}, 1),
        ({"no_repeat_ngram_size": 2, "repetition_penalty": 1.3, "min_length": 4}, 1),
        ({"num_beams": 3, "num_return_sequences": 2}, 2),
        ({"num_beams": 2, "early_stopping": "never", "length_penalty": 1.5, "no_repeat_ngram_size": 3}, 1),
        ({"do_sample": True, "num_return_sequences": 2, "top_k": 5, "temperature": 0.9}, 2),
    ],
)
def test_batch_of_64_equals_one_example_at_a_time(gru_batch, kwargs, copies):
    model, prompts = gru_batch
    kwargs = dict(kwargs, max_new_tokens=8)
    seeds = list(range(100, 164))
    if kwargs.get("do_sample"):
        batch = generate(model, prompts, seed=seeds, **kwargs)
        singles = [generate(model, [p], seed=[s], **kwargs) for p, s in zip(prompts, seeds)]
    else:
        batch = generate(model, prompts, **kwargs)
        singles = [generate(model, [p], **kwargs) for p in prompts]
    assert batch.sequences.shape[0] == 64 * copies
    assert (batch.lengths < 8).any() and (batch.lengths == 8).any()  # rows finish at different steps
    assert_batch_invariant(batch, singles, copies, pad=model.pad_id)


# ---------------------------------------------------------------------------------------------
# arguments, errors, progress
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def model():
    return NGramModel(random_table(2, 8, seed=0, eos=7), eos_id=7, pad_id=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_beams": 2, "num_return_sequences": 3}, ValueError, "num_return_sequences <= num_beams"),
        ({"num_return_sequences": 2}, ValueError, "Greedy search returns one sequence"),
        ({"do_sample": True, "top_p": 0.0}, ValueError, r"top_p in \(0, 1\]"),
        ({"do_sample": True, "top_p": 1.5}, ValueError, r"top_p in \(0, 1\]"),
        ({"do_sample": True, "temperature": 0.0}, ValueError, "temperature > 0.*do_sample=False"),
        ({"do_sample": True, "temperature": -1.0}, ValueError, "temperature > 0"),
        ({"do_sample": True, "top_k": -1}, ValueError, "'top_k' >= 0"),
        ({"repetition_penalty": 0.0}, ValueError, "repetition_penalty"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens"),
        ({"num_beams": 0}, ValueError, "num_beams"),
        ({"no_repeat_ngram_size": -1}, ValueError, "no_repeat_ngram_size"),
        ({"early_stopping": "always"}, ValueError, "True, False or 'never'"),
        ({"early_stopping": 1}, ValueError, "True, False or 'never'"),
        ({"eos_token_id": 8}, ValueError, r"eos_token_id in \[0, V\) = \[0, 8\)"),
        ({"do_sample": True, "num_beams": 2}, NotImplementedError, "Beam sampling"),
        ({"do_sample": True, "seed": [1, 2]}, ValueError, "one seed per example, i.e. 3 seeds, got 2"),
        ({"do_sample": True, "seed": "abc"}, TypeError, "seed"),
        ({"length_penalty": math.nan}, ValueError, "length_penalty"),
    ],
)
def test_bad_arguments_raise_clear_errors(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        generate(model, PROMPTS[:3], **kwargs)


def test_min_length_without_eos_is_an_error():
    no_eos = NGramModel(random_table(2, 8, seed=0))
    with pytest.raises(ValueError, match="no EOS token.*eos_token_id"):
        generate(no_eos, PROMPTS, min_length=3)
    with pytest.raises(ValueError, match="no EOS token"):
        generate(no_eos, PROMPTS, min_new_tokens=1)


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match="Decodable"):
        generate(object(), PROMPTS)


class _Broken(NGramModel):
    def __init__(self, fault: str) -> None:
        super().__init__(random_table(2, 8, seed=0, eos=7), eos_id=7, pad_id=0)
        self.fault = fault

    def start_decoding(self, prompts, *, max_new_tokens):
        start = super().start_decoding(prompts, max_new_tokens=max_new_tokens)
        if self.fault == "start-type":
            return (start.logits, start.state)
        if self.fault == "start-logits":
            start.logits = start.logits[:, None]
        if self.fault == "prefix-lengths":
            start.prefix_lengths = start.prefix_lengths + 10
        if self.fault == "prefix-token":
            start.prefix[0, 0] = 8
        return start

    def decode_step(self, tokens, state):
        logits, state = super().decode_step(tokens, state)
        if self.fault == "step-vocab":
            return torch.cat([logits, logits[:, :1]], dim=1), state
        if self.fault == "step-rows":
            return logits[:1], state
        if self.fault == "step-tuple":
            return logits
        return logits, state


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        ("start-type", TypeError, "DecodingStart"),
        ("start-logits", ValueError, r"logits to be a floating-point tensor \[B, V\]"),
        ("prefix-lengths", ValueError, r"prefix_lengths in \[0, P\]"),
        ("prefix-token", ValueError, r"prefix tokens .* in \[0, V\) = \[0, 8\)"),
        ("step-vocab", ValueError, r"logits of shape \[3, 8\].*got a torch.float64 tensor of shape \[3, 9\]"),
        ("step-rows", ValueError, r"logits of shape \[3, 8\]"),
        ("step-tuple", TypeError, r"tuple \(logits, state\)"),
    ],
)
def test_misbehaving_models_raise_clear_errors(fault, error, match):
    with pytest.raises(error, match=match):
        generate(_Broken(fault), PROMPTS[:3], max_new_tokens=3, no_repeat_ngram_size=2)


def test_beam_search_step_logits_are_checked():
    with pytest.raises(ValueError, match=r"logits of shape \[6, 8\]"):
        generate(_Broken("step-vocab"), PROMPTS[:3], max_new_tokens=3, num_beams=2)


def test_processor_functions_validate_their_arguments():
    scores = torch.zeros(2, 4)
    context, lengths = torch.zeros(2, 3, dtype=torch.long), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="strictly positive"):
        apply_repetition_penalty(scores, context, lengths, 0.0)
    with pytest.raises(ValueError, match=r"'context' to be an integer tensor \[N, L\] with N = 2"):
        apply_no_repeat_ngram(scores, context[:1], lengths, 2)
    with pytest.raises(ValueError, match=r"context tokens in \[0, V\)"):
        apply_no_repeat_ngram(scores, context + 5, lengths, 2)
    with pytest.raises(ValueError, match="positive int"):
        apply_no_repeat_ngram(scores, context, lengths, 0)
    with pytest.raises(ValueError, match=r"top_p in \(0, 1\]"):
        apply_top_p(scores, 0.0)
    with pytest.raises(ValueError, match="positive int"):
        apply_top_k(scores, 0)
    with pytest.raises(ValueError, match="strictly positive"):
        apply_temperature(scores, 0.0)
    with pytest.raises(ValueError, match=r"eos_token_id' in \[0, V\)"):
        apply_min_length(scores, lengths, 3, eos_token_id=4)


def test_sampling_arguments_without_do_sample_warn(model):
    with pytest.warns(UserWarning, match="do_sample is False, so temperature=0.5, top_k=3 has no effect"):
        generate(model, PROMPTS[:2], temperature=0.5, top_k=3)


def test_progress_bar(model, capsys):
    out = generate(model, PROMPTS[:2], max_new_tokens=3, progress=True)
    assert out.sequences.shape[0] == 2
    assert "generate" in capsys.readouterr().err
