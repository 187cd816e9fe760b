"""Part-of-speech tagging on UD English-EWT with the graphattn encoder: one label per vector.

Every word is a vector (a learned word embedding joined with a character CNN over its bytes,
graphattn.models.SequenceTagger), the sentence a set of such vectors, and the encoder's
self-attention an edge set over them: ``full`` (every word sees every word) or
``local_global`` (a window of 3 words each side plus the first word as a global node that sees
and is seen by all: Longformer). Train on train, select the checkpoint on dev (UPOS accuracy),
report test accuracy -- overall and on words outside the training vocabulary.

Writes experiments/results/pos_tagging.json, pos_tagging.md and pos_tagging.png (the attention
of both trained models over one test sentence, next to the two patterns). Each run merges its
row into the results, so one pattern can be rerun alone:

    python experiments/pos_tagging.py                            # both patterns (~2 x 25 min on 2 cores)
    python experiments/pos_tagging.py --patterns local_global --epochs 10
    python experiments/pos_tagging.py --quick                    # smoke test on a few sentences
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from graphattn.compare import machine_info
from graphattn.data.text import TokenBatch, collate_tagged, load_ud_pos
from graphattn.models import SequenceTagger, TransformerConfig
from graphattn.train import Callback, LengthBuckets, TrainConfig, TrainState, fit, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "ud_english_ewt"
PATTERNS = {
    "full": "full",
    "local_global": "longformer(window=3, positions=(0,))",
}


@dataclass
class RunResult:
    pattern: str
    encoder_pattern: str
    parameters: int
    epochs: float
    steps: int
    train_seconds: float
    best_step: int | None
    dev_accuracy: float
    test_accuracy: float
    test_known_accuracy: float
    test_unknown_accuracy: float
    test_unknown_words: int
    test_words: int


class TimeBudget(Callback):
    """Stop training after ``seconds`` of wall time (the best dev checkpoint is kept)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def on_step_end(self, state: TrainState) -> None:
        if time.perf_counter() - self.started > self.seconds:
            state.should_stop = True


def tagger_loss(model: SequenceTagger, batch: TokenBatch, state: TrainState | None = None):
    return model.loss(batch.ids, batch.chars, batch.labels, label_smoothing=0.05)


@torch.no_grad()
def tag_accuracy(model: SequenceTagger, data, batch_size: int = 128) -> dict[str, float]:
    """Token accuracy over ``data`` and over its words outside the training vocabulary."""
    model.eval()
    correct = total = unknown_correct = unknown_total = 0
    order = sorted(range(len(data)), key=lambda i: len(data.words[i]))
    vocabulary = data.vocabulary
    for start in range(0, len(order), batch_size):
        batch = collate_tagged([data[i] for i in order[start:start + batch_size]])
        predicted = model(batch.ids, batch.chars).argmax(-1)
        real = batch.labels != -100
        hits = (predicted == batch.labels) & real
        unknown = real & ~vocabulary.is_known(batch.ids)
        correct += int(hits.sum())
        total += int(real.sum())
        unknown_correct += int((hits & unknown).sum())
        unknown_total += int(unknown.sum())
    known_total = total - unknown_total
    return {
        "accuracy": correct / total,
        "known_accuracy": (correct - unknown_correct) / known_total if known_total else float("nan"),
        "unknown_accuracy": unknown_correct / unknown_total if unknown_total else float("nan"),
        "unknown_words": unknown_total,
        "words": total,
    }


def build_model(args: argparse.Namespace, vocab_size: int, pattern: str) -> SequenceTagger:
    config = TransformerConfig(
        vocab_size=vocab_size, d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
        ff_dim=4 * args.d_model, dropout=args.dropout, position="relative", encoder_pattern=pattern,
        norm_first=True,
    )
    return SequenceTagger(
        config, 17, word_dim=args.d_model, char_filters=args.char_filters, word_dropout=args.word_dropout,
    )


def run(args: argparse.Namespace, name: str, data: dict) -> tuple[RunResult, SequenceTagger]:
    pattern = PATTERNS[name]
    torch.manual_seed(args.seed)
    model = build_model(args, len(data["train"].vocabulary), pattern)
    parameters = sum(p.numel() for p in model.parameters())
    buckets = LengthBuckets(data["train"], data["train"].lengths(), args.batch_size, collate_tagged, seed=args.seed)
    steps_per_epoch = len(buckets)
    config = TrainConfig(
        epochs=args.epochs, batch_size=1, lr=args.lr, weight_decay=0.01, schedule="cosine",
        warmup_steps=min(400, steps_per_epoch), clip_grad_norm=1.0, seed=args.seed, monitor="val_accuracy",
        mode="max", patience=args.patience, progress=args.progress, log_every=50, device="cpu",
    )
    out_dir = Path(args.work_dir) / name
    print(f"[pos] {name} ({pattern}): {parameters:,} parameters, {steps_per_epoch} batches per epoch", flush=True)
    started = time.perf_counter()
    result = fit(
        model, buckets, loss_fn=tagger_loss, collate_fn=buckets.collate, val_data=data["valid"],
        evaluate_fn=lambda m, valid: {"val_accuracy": tag_accuracy(m, valid)["accuracy"]},
        config=config, out_dir=out_dir, resume=False, callbacks=[TimeBudget(args.budget_minutes * 60)],
    )
    train_seconds = time.perf_counter() - started
    load_checkpoint(out_dir / "best.pt", model)
    dev = tag_accuracy(model, data["valid"])
    test = tag_accuracy(model, data["test"])
    print(
        f"[pos] {name}: {result.steps} steps ({result.epochs_completed:.1f} epochs) in {train_seconds:.0f} s, "
        f"dev {dev['accuracy']:.4f}, test {test['accuracy']:.4f} (unknown words {test['unknown_accuracy']:.4f})",
        flush=True,
    )
    return RunResult(
        pattern=name, encoder_pattern=pattern, parameters=parameters, epochs=round(result.epochs_completed, 2),
        steps=result.steps, train_seconds=round(train_seconds, 1), best_step=result.best_step,
        dev_accuracy=round(dev["accuracy"], 5), test_accuracy=round(test["accuracy"], 5),
        test_known_accuracy=round(test["known_accuracy"], 5), test_unknown_accuracy=round(test["unknown_accuracy"], 5),
        test_unknown_words=test["unknown_words"], test_words=test["words"],
    ), model


def plot_attention(models: dict[str, SequenceTagger], data, path: Path, sentence_index: int) -> None:
    """Last-layer attention (mean over heads) of every model over one test sentence, and the
    pattern each one used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    example = data[sentence_index]
    words = list(data.forms[sentence_index])
    n = len(words)
    batch = collate_tagged([example])
    fig, axes = plt.subplots(2, len(models), figsize=(6.2 * len(models), 11.5), squeeze=False)
    for column, (name, model) in enumerate(models.items()):
        model.eval()
        graph, weights = model.attention_weights(batch.ids, batch.chars)[-1]
        dense = torch.zeros(n, n)
        dense[graph.row, graph.col] = weights.mean(-1).float()
        predicted = model(batch.ids, batch.chars).argmax(-1)[0].tolist()
        labels = [f"{w} ({data.tag_names[t]})" for w, t in zip(words, predicted)]
        ax = axes[0, column]
        image = ax.imshow(dense, cmap="viridis", vmin=0)
        ax.set_title(f"{name}: last-layer attention (mean over heads)", fontsize=10)
        ax.set_xticks(range(n), words, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
        ax.set_xlabel("key word")
        ax.set_ylabel("query word (predicted tag)")
        fig.colorbar(image, ax=ax, fraction=0.046)
        edges = torch.zeros(n, n)
        edges[graph.row, graph.col] = 1.0
        axes[1, column].imshow(edges, cmap="Greys", vmin=0, vmax=1)
        axes[1, column].set_title(f"pattern: {PATTERNS[name]} ({graph.num_edges} of {n * n} pairs)", fontsize=10)
        axes[1, column].set_xticks(range(n), words, rotation=90, fontsize=7)
        axes[1, column].set_yticks(range(n), words, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(payload: dict, path: Path) -> None:
    s = payload["settings"]
    lines = [
        "# Part-of-speech tagging on UD English-EWT (experiments/pos_tagging.py)",
        "",
        f"Command: `{payload['command']}`. Train on train ({payload['data']['train']}), select the checkpoint with the "
        f"best dev UPOS accuracy, report test accuracy ({payload['data']['test']}). Unknown words: test words outside "
        "the training vocabulary (words seen at least twice in train), which the model sees as an unknown-word "
        "signature id plus their characters.",
        "",
        f"Model: `SequenceTagger` -- word embedding ({s['d_model']}) joined with a character CNN ({s['char_filters']} "
        f"filters over the UTF-8 bytes, width 3, max-pooled), a pre-norm Transformer encoder (d_model {s['d_model']}, "
        f"{s['heads']} heads, {s['layers']} layers, feed-forward {4 * s['d_model']}, T5 relative position bias, dropout "
        f"{s['dropout']}, word dropout {s['word_dropout']}), a linear layer to the 17 tags. AdamW lr {s['lr']} "
        f"(weight decay 0.01, cosine with warm-up), label smoothing 0.05, batches of {s['batch_size']} sentences of "
        f"similar length, at most {s['epochs']} epochs or {s['budget_minutes']} minutes, patience {s['patience']}; "
        f"{s['threads']} CPU threads.",
        "",
        "| pattern | encoder pattern | params | epochs | train time | dev acc | test acc | test acc, known words | test acc, unknown words |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["runs"]:
        lines.append(
            f"| {r['pattern']} | `{r['encoder_pattern']}` | {r['parameters']:,} | {r['epochs']} | "
            f"{r['train_seconds'] / 60:.1f} min | {100 * r['dev_accuracy']:.2f}% | **{100 * r['test_accuracy']:.2f}%** | "
            f"{100 * r['test_known_accuracy']:.2f}% | {100 * r['test_unknown_accuracy']:.2f}% "
            f"({r['test_unknown_words']:,} words) |"
        )
    earlier = payload.get("earlier_runs", [])
    if earlier:
        lines += [
            "",
            "Earlier runs (replaced by the rows above; settings that differ from the current ones):",
            "",
            "| pattern | settings | epochs | dev acc | test acc | test acc, unknown words |",
            "|---|---|---|---|---|---|",
        ]
        for r in earlier:
            differ = {k: v for k, v in r.get("settings", {}).items() if s.get(k) != v}
            lines.append(
                f"| {r['pattern']} | {', '.join(f'{k}={v}' for k, v in differ.items()) or 'same'} | {r['epochs']} | "
                f"{100 * r['dev_accuracy']:.2f}% | {100 * r['test_accuracy']:.2f}% | {100 * r['test_unknown_accuracy']:.2f}% |"
            )
    lines += [
        "",
        "Targets (issue 6): >= 93% UPOS test accuracy, aim >= 95%; strong taggers reach 96-97% (e.g. Stanza "
        "~96.4% UPOS on EWT with pretrained word vectors; a BiLSTM with character features and no pretraining "
        "~95%).",
        "",
        "![attention](pos_tagging.png)",
        "",
        f"`pos_tagging.png`: the last-layer attention of each trained model over test sentence "
        f"`{payload.get('plot_sentence', '')}` (rows: query words with their predicted tag), and the pattern each used.",
        "",
        f"Machine: {json.dumps(payload['machine'])}",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(SHARED), help="folder with en_ewt-ud-{train,dev,test}.conllu")
    parser.add_argument("--patterns", nargs="+", choices=sorted(PATTERNS), default=["full", "local_global"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="wall-time limit per run")
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--word-dropout", type=float, default=0.1)
    parser.add_argument("--char-filters", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a few hundred sentences, one epoch: a smoke test")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--work-dir", default="/tmp/graphattn_pos", help="checkpoints and metrics.jsonl per run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    if not root.is_dir():
        sys.exit(f"UD English-EWT not found at {root}; pass --root (see ../shared/data/text/ud_english_ewt)")
    train = load_ud_pos(root, "train", max_word_bytes=20)
    data = {
        "train": train,
        "valid": load_ud_pos(root, "dev", vocabulary=train.vocabulary, max_word_bytes=20),
        "test": load_ud_pos(root, "test", vocabulary=train.vocabulary, max_word_bytes=20),
    }
    if args.quick:
        from graphattn.data.text import PosTaggingData

        def head(d, n):
            return PosTaggingData(d.split, d.words[:n], d.tags[:n], d.forms[:n], d.sentence_ids[:n], d.vocabulary,
                                  max_word_bytes=d.max_word_bytes)

        data = {"train": head(train, 400), "valid": head(data["valid"], 100), "test": head(data["test"], 100)}
        args.epochs, args.d_model, args.layers = 1, 32, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / ("pos_tagging_quick.json" if args.quick else "pos_tagging.json")
    payload = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
    models = {}
    previous_settings = payload.get("settings", {})  # of the rows this invocation replaces
    for name in args.patterns:
        result, models[name] = run(args, name, data)
        settings = {k: v for k, v in vars(args).items() if k not in ("patterns", "out", "work_dir", "progress", "root")}
        settings["char_boundaries"] = True  # CharCNN marks word starts and ends (runs before 2026-12-03 did not)
        row = {**asdict(result), "settings": settings}
        replaced = [{"settings": previous_settings, **r} for r in payload["runs"] if r["pattern"] == name]
        payload.setdefault("earlier_runs", []).extend(replaced)  # kept, with their settings
        payload["runs"] = [r for r in payload["runs"] if r["pattern"] != name] + [row]
        payload["runs"].sort(key=lambda r: list(PATTERNS).index(r["pattern"]))
        payload.update(
            command="python experiments/pos_tagging.py " + " ".join(sys.argv[1:] if argv is None else argv),
            settings=settings,
            data={split: repr(d) for split, d in data.items()},
            machine=machine_info(),
        )
        json_path.write_text(json.dumps(payload, indent=2))
    # the attention picture: every trained model of this invocation, plus the others from their checkpoints
    for name in PATTERNS:
        best = Path(args.work_dir) / name / "best.pt"
        if name not in models and best.exists():
            model = build_model(args, len(train.vocabulary), PATTERNS[name])
            try:
                load_checkpoint(best, model)
                models[name] = model
            except (RuntimeError, ValueError):
                pass  # a checkpoint of other settings
    test = data["test"]
    index = next((i for i in range(len(test)) if 14 <= len(test.words[i]) <= 20), 0)
    payload["plot_sentence"] = " ".join(test.forms[index])
    stem = "pos_tagging_quick" if args.quick else "pos_tagging"
    plot_attention(dict(sorted(models.items(), key=lambda kv: list(PATTERNS).index(kv[0]))), test,
                   out / f"{stem}.png", index)
    json_path.write_text(json.dumps(payload, indent=2))
    write_markdown(payload, out / f"{stem}.md")
    print(f"[pos] wrote {json_path}, {out / (stem + '.md')}, {out / (stem + '.png')}")


if __name__ == "__main__":
    main()
