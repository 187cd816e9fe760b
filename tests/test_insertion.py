"""Insertion Transformer: slot targets, the loss against a hand computation, parallel decoding in
~log2(n) steps, batch invariance, and learning a small task."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from graphattn.data.algorithmic import BOS, EOS, PAD, collate, make_task, vocab_size
from graphattn.decoding import insertion_decode
from graphattn.models import InsertionTransformer, TransformerConfig, nat_targets, slot_targets

MASK = 3  # the algorithmic tasks' UNK slot serves as MASK here (never in these targets)


def tiny_model(seed: int = 0, vocab: int = 12) -> InsertionTransformer:
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=vocab, d_model=32, num_heads=2, num_layers=1, ff_dim=64, dropout=0.0,
                               mask_id=MASK)
    return InsertionTransformer(config)


def test_slot_targets_cover_the_missing_spans() -> None:
    target = [10, 11, 12, 13, 14, 15]
    slots = slot_targets(target, [1, 4])
    assert [sorted(t for t, _ in s) for s in slots] == [[10], [12, 13], [15]]
    for s in slots:
        assert sum(w for _, w in s) == pytest.approx(1.0)
    uniform = slot_targets(target, [], weighting="uniform")
    assert [w for _, w in uniform[0]] == pytest.approx([1 / 6] * 6)
    sharp = slot_targets([4, 5, 6, 7, 8], [], temperature=0.05)[0]
    assert sharp[0][0] == 6 and sharp[0][1] > 0.999  # the centre
    with pytest.raises(ValueError, match="weighting"):
        slot_targets(target, [], weighting="left")


def test_loss_matches_a_hand_computation() -> None:
    model = tiny_model()
    src = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]])
    target = torch.tensor([[4, 5, 6, 7, 8], [9, 10, 0, 0, 0]])
    loss, logs = model.loss(src, target, generator=torch.Generator().manual_seed(3), temperature=0.7)
    # the same draws by hand
    g = torch.Generator().manual_seed(3)
    encoding = model.encode(src)
    total, slots_seen = 0.0, 0
    for b, n in enumerate([5, 2]):
        tokens = target[b, :n].tolist()
        k = int(torch.randint(n + 1, (1,), generator=g))
        kept = sorted(torch.randperm(n, generator=g)[:k].tolist())
        canvas, lengths = model.canvas([[tokens[i] for i in kept]])
        sub = encoding.select(torch.tensor([b]))
        log_probs = torch.log_softmax(model.slot_logits(sub, canvas, lengths), -1)[0]
        for slot, pairs in enumerate(slot_targets(tokens, kept, temperature=0.7)):
            slots_seen += 1
            for token, weight in (pairs or [(EOS, 1.0)]):
                total -= weight * float(log_probs[slot, token].detach())
    assert float(loss.detach()) == pytest.approx(total / slots_seen, rel=1e-5)
    assert 0.0 <= float(logs["slot_accuracy"]) <= 1.0


def _oracle_model(targets: list[list[int]]):
    """A stand-in model whose every slot inserts the centre of its missing span (the balanced
    binary tree's choice) -- decoding must then take ceil(log2(n + 1)) + 1 passes."""
    config = SimpleNamespace(eos_id=EOS, pad_id=PAD, bos_id=BOS, mask_id=MASK)

    def canvas(rows, device=None):
        return rows, torch.tensor([len(r) + 2 for r in rows])

    def slot_logits(encoding, rows, lengths):
        logits = torch.full((len(rows), max(len(r) for r in rows) + 1, 20), -10.0)
        for r, (b, row) in enumerate(zip(encoding.rows.tolist(), rows)):
            target = targets[b]
            positions, start = [], 0
            for token in row:  # the canvas is a subsequence of the target: locate it greedily
                start = target.index(token, start) + 1
                positions.append(start - 1)
            for slot, pairs in enumerate(slot_targets(target, positions)):
                logits[r, slot, pairs[0][0] if pairs else EOS] = 10.0
        return logits

    class Encoding(SimpleNamespace):
        def select(self, rows):
            return Encoding(rows=self.rows[rows], lengths=self.lengths[rows])

    return SimpleNamespace(
        config=config, canvas=canvas, slot_logits=slot_logits, banned_ids=lambda: [PAD, BOS, MASK],
        encode=lambda src: Encoding(rows=torch.arange(len(targets)), lengths=torch.full((len(targets),), 8)),
    )


def test_parallel_decoding_takes_about_log2_n_steps() -> None:
    targets = [[4 + (i % 9) for i in range(n)] for n in (1, 3, 7, 15, 16)]
    out = insertion_decode(_oracle_model(targets), None, max_length=40)
    for b, target in enumerate(targets):
        assert out.sequences[b, : out.lengths[b]].tolist() == target
        assert int(out.iterations[b]) == math.ceil(math.log2(len(target) + 1)) + 1
    # max_length caps the output
    capped = insertion_decode(_oracle_model(targets), None, max_length=5)
    assert int(capped.lengths.max()) <= 5


def test_decoding_is_batch_invariant_and_never_inserts_banned_ids() -> None:
    model = tiny_model(seed=1).eval()
    src = torch.tensor([[4, 5, 6, 7, 8], [9, 10, 0, 0, 0], [6, 0, 0, 0, 0]])
    with torch.no_grad():
        together = insertion_decode(model, src, max_length=8)
        for b in range(3):
            alone = insertion_decode(model, src[b:b + 1, : int((src[b] != 0).sum())], max_length=8)
            assert together.sequences[b, : together.lengths[b]].tolist() == alone.sequences[0, : alone.lengths[0]].tolist()
            assert together.iterations[b] == alone.iterations[0]
    produced = together.sequences[together.sequences != PAD]
    assert not any(t in (BOS, MASK, EOS) for t in produced.tolist())


def test_a_tiny_model_learns_to_copy_in_few_parallel_steps() -> None:
    torch.set_num_threads(1)
    vocab = vocab_size("copy", 6)
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=vocab, d_model=32, num_heads=2, num_layers=2, ff_dim=64, dropout=0.0,
                               mask_id=MASK)
    model = InsertionTransformer(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = make_task("copy", 4000, min_length=2, max_length=4, num_symbols=6, seed=0)
    test = make_task("copy", 64, min_length=2, max_length=4, num_symbols=6, seed=1)
    test_src, _ = collate(test)

    def exact() -> tuple[int, float]:
        model.eval()
        with torch.no_grad():
            out = insertion_decode(model, test_src)
        model.train()
        right = sum(out.sequences[b, : out.lengths[b]].tolist() == test[b][0] for b in range(64))
        return right, float(out.iterations.float().mean())

    before, _ = exact()
    g = torch.Generator().manual_seed(0)
    for step in range(300):
        src, tgt = collate([data[(step * 32 + i) % len(data)] for i in range(32)])
        loss, _ = model.loss(src, nat_targets(tgt, pad_id=PAD, bos_id=BOS, eos_id=EOS), generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, passes = exact()
    assert before <= 8 and after >= 24, (before, after)
    # targets of 2-4 tokens: a balanced tree needs 2-3 insertion passes plus the final one
    assert passes <= 4.0


def test_bad_input() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="without BOS / EOS"):
        model.loss(torch.tensor([[4, 5]]), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="one target per source"):
        model.loss(torch.tensor([[4, 5]]), torch.tensor([[4, 5], [6, 7]]))
    with pytest.raises(TypeError, match="InsertionTransformer"):
        insertion_decode(object(), torch.tensor([[4]]))
