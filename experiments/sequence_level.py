"""Does sequence-level training move test BLEU? Cross-entropy vs MIXER vs REINFORCE (issue 8).

Protocol (one generated seq2seq task from :mod:`graphattn.data.algorithmic`, default ``sort``):

1. **Pre-training**: an :class:`~graphattn.models.EncoderDecoder` trained with cross-entropy
   (:class:`~graphattn.train.Seq2SeqLoss`) for ``--pretrain-steps`` steps; the checkpoint with
   the best validation BLEU (:func:`~graphattn.train.validation_bleu`, greedy) is kept.
2. **Continuation**, from that checkpoint, the same number of optimizer steps
   (``--continue-steps``) for each arm, model selection by validation BLEU again:

   * ``xent``: more cross-entropy (the control);
   * ``mixer``: :class:`~graphattn.train.SequenceLevelLoss` with the MIXER schedule (Ranzato et
     al. 2015): the REINFORCE suffix grows by ``--mixer-delta`` tokens every
     ``--continue-steps / --mixer-stages`` steps, self-critical baseline, reward sacreBLEU's
     sentence BLEU;
   * ``reinforce``: REINFORCE on every token from the start (self-critical baseline).

3. Test: corpus BLEU (sacreBLEU, ids as words) and exact match of greedy outputs on
   ``--test-size`` new examples; mean +- std over ``--seeds``.

Written to ``experiments/results/sequence_level.{json,md}``. The numbers are reported as they
come out, whichever way they point.

    python experiments/sequence_level.py                      # 3 seeds: ~15 min on 1 thread
    python experiments/sequence_level.py --quick --out /tmp/sl   # seconds
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from graphattn.compare import machine_info
from graphattn.data.algorithmic import BOS, EOS, PAD, collate, make_task, vocab_size
from graphattn.models import EncoderDecoder, TransformerConfig, count_parameters
from graphattn.train import (
    MixerSchedule,
    Seq2SeqLoss,
    SequenceLevelLoss,
    TrainConfig,
    corpus_bleu,
    fit,
    greedy_decode,
    load_checkpoint,
    validation_bleu,
)

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = ("xent", "mixer", "reinforce")


def test_metrics(model: EncoderDecoder, data: list, batch_size: int = 128) -> dict[str, float]:
    model.eval()
    hypotheses, references, exact = [], [], 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            src, tgt = collate(data[start:start + batch_size])
            outputs = greedy_decode(model, src, max_new_tokens=tgt.size(1) + 9, eos_id=EOS, pad_id=PAD, bos_id=BOS)
            for output, (_, target) in zip(outputs, data[start:start + batch_size]):
                reference = list(target[1:-1])
                exact += output == reference
                hypotheses.append(" ".join(map(str, output)))
                references.append(" ".join(map(str, reference)))
    return {"bleu": corpus_bleu(hypotheses, references, tokenize="none"), "exact_match": exact / len(data)}


def train(model: EncoderDecoder, data: list, valid: list, loss_fn, steps: int, args: argparse.Namespace, out: Path,
          seed: int, lr: float) -> dict:
    config = TrainConfig(
        epochs=10_000, max_steps=steps, batch_size=args.batch_size, lr=lr, seed=seed, eval_every=args.eval_every,
        monitor="val_bleu", mode="max", progress=False, device="cpu", clip_grad_norm=1.0, log_every=10_000,
    )
    evaluate_fn = validation_bleu(collate_fn=collate, pad_id=PAD, eos_id=EOS, bos_id=BOS, batch_size=128)
    started = time.perf_counter()
    result = fit(model, data, loss_fn=loss_fn, config=config, collate_fn=collate, val_data=valid,
                 evaluate_fn=evaluate_fn, out_dir=out, resume=False)
    seconds = time.perf_counter() - started
    if (out / "best.pt").is_file():
        load_checkpoint(out / "best.pt", model)
    return {"best_val_bleu": result.best_metric, "best_step": result.best_step, "train_s": seconds}


def run_seed(args: argparse.Namespace, seed: int, work: Path) -> list[dict]:
    train_data = make_task(args.task, args.train_size, min_length=args.min_length, max_length=args.max_length,
                           num_symbols=args.symbols, seed=seed)
    valid = make_task(args.task, args.valid_size, min_length=args.min_length, max_length=args.max_length,
                      num_symbols=args.symbols, seed=10_000 + seed)
    test = make_task(args.task, args.test_size, min_length=args.min_length, max_length=args.max_length,
                     num_symbols=args.symbols, seed=20_000 + seed)
    config = TransformerConfig(
        vocab_size=vocab_size(args.task, args.symbols), d_model=args.d_model, num_heads=4, num_layers=args.layers,
        ff_dim=2 * args.d_model, dropout=0.0, encoder_pattern="full", decoder_pattern="causal",
    )
    torch.manual_seed(seed)
    model = EncoderDecoder(config)
    pre = train(model, train_data, valid, Seq2SeqLoss(pad_id=PAD), args.pretrain_steps, args, work / f"seed{seed}" / "pre",
                seed, args.lr)
    pre_test = test_metrics(model, test)
    print(f"[sequence_level] seed {seed} pre-trained: validation BLEU {pre['best_val_bleu']:.2f}, test BLEU "
          f"{pre_test['bleu']:.2f}, exact {100 * pre_test['exact_match']:.1f}% ({pre['train_s']:.0f} s)", flush=True)
    rows = [{"arm": "pretrained", "seed": seed, **pre, "test": pre_test, "parameters": count_parameters(model)}]
    stage = max(1, args.continue_steps // args.mixer_stages)
    losses = {
        "xent": Seq2SeqLoss(pad_id=PAD),
        "mixer": SequenceLevelLoss(PAD, BOS, EOS, baseline="greedy", seed=seed,
                                   schedule=MixerSchedule(xent_steps=0, anneal_every=stage, delta=args.mixer_delta)),
        "reinforce": SequenceLevelLoss(PAD, BOS, EOS, baseline="greedy", seed=seed),
    }
    for arm in args.arms:
        arm_model = copy.deepcopy(model)
        info = train(arm_model, train_data, valid, losses[arm], args.continue_steps, args, work / f"seed{seed}" / arm,
                     seed + 1, args.lr if arm == "xent" else args.reinforce_lr)
        metrics = test_metrics(arm_model, test)
        print(f"[sequence_level] seed {seed} {arm}: validation BLEU {info['best_val_bleu']:.2f}, test BLEU "
              f"{metrics['bleu']:.2f}, exact {100 * metrics['exact_match']:.1f}% ({info['train_s']:.0f} s)", flush=True)
        rows.append({"arm": arm, "seed": seed, **info, "test": metrics})
    return rows


def summarize(rows: list[dict]) -> dict:
    summary = {}
    for arm in ("pretrained", *ARMS):
        chosen = [r for r in rows if r["arm"] == arm]
        if not chosen:
            continue

        def stats(values: list[float]) -> tuple[float, float]:
            return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

        summary[arm] = {
            "test_bleu": stats([r["test"]["bleu"] for r in chosen]),
            "test_exact_match": stats([r["test"]["exact_match"] for r in chosen]),
            "train_s": statistics.fmean(r["train_s"] for r in chosen),
            "seeds": len(chosen),
        }
    return summary


def markdown(args: argparse.Namespace, payload: dict) -> str:
    s = payload["summary"]
    lines = [
        "# Sequence-level training vs cross-entropy (experiments/sequence_level.py)",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} torch thread(s).",
        "",
        f"Task `{args.task}`: {args.min_length}-{args.max_length} symbols out of {args.symbols}; "
        f"{args.train_size} training / {args.valid_size} validation / {args.test_size} test examples (new per seed). "
        f"EncoderDecoder d_model {args.d_model}, {args.layers}+{args.layers} layers, full / causal attention, no dropout. "
        f"AdamW lr {args.lr:g} (mixer and reinforce arms: {args.reinforce_lr:g}), batch {args.batch_size}, gradient clipping 1.0. Pre-training: {args.pretrain_steps} "
        f"cross-entropy steps; each arm then continues from the same checkpoint for {args.continue_steps} steps. "
        f"Every run keeps the checkpoint with the best validation BLEU (greedy, every {args.eval_every} steps). "
        f"MIXER: the REINFORCE suffix grows by {args.mixer_delta} tokens every "
        f"{max(1, args.continue_steps // args.mixer_stages)} steps; REINFORCE: every token from the start; both with "
        f"the self-critical (greedy) baseline and sentence BLEU as the reward. Test: greedy decoding, corpus BLEU "
        f"(sacreBLEU, ids as words) and exact match; mean ± std over seeds {', '.join(map(str, args.seeds))}.",
        "",
        "| arm | test BLEU | test exact match | training time (s) |",
        "|---|---|---|---|",
    ]
    for arm in ("pretrained", *ARMS):
        if arm in s:
            r = s[arm]
            lines.append(f"| {arm} | {r['test_bleu'][0]:.2f} ± {r['test_bleu'][1]:.2f} | "
                         f"{100 * r['test_exact_match'][0]:.1f}% ± {100 * r['test_exact_match'][1]:.1f} | "
                         f"{r['train_s']:.0f} |")
    lines += ["", "Per run:", "", "| arm | seed | best validation BLEU (step) | test BLEU | test exact match |",
              "|---|---|---|---|---|"]
    for r in payload["runs"]:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['best_val_bleu']:.2f} ({r['best_step']}) | {r['test']['bleu']:.2f} | "
                     f"{100 * r['test']['exact_match']:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sort", choices=("copy", "reverse", "sort", "addition"))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--min-length", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--valid-size", type=int, default=256)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reinforce-lr", type=float, default=1e-4,
                        help="learning rate of the mixer and reinforce arms (REINFORCE fine-tuning wants a smaller one)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--continue-steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--mixer-delta", type=int, default=2)
    parser.add_argument("--mixer-stages", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/graphattn-sequence-level"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.train_size, args.valid_size, args.test_size = [0], 200, 32, 32
        args.pretrain_steps, args.continue_steps, args.eval_every = 20, 10, 10
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        rows += run_seed(args, seed, args.work_dir)
    command = shlex.join(["python", "experiments/sequence_level.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"command": command, "machine": machine_info(), "settings": settings, "runs": rows,
               "summary": summarize(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sequence_level.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "sequence_level.md").write_text(markdown(args, payload))
    print(f"[sequence_level] wrote {args.out / 'sequence_level.md'}", flush=True)
    return payload


if __name__ == "__main__":
    main()
