"""Incremental decoding with the key/value cache vs recomputing the whole prefix at every step.

A decoder-only Transformer (graphattn.models.CausalLM, random weights) greedily generates 256
new tokens after a 16-token prompt, for several causal self-attention patterns and batch sizes:

* cached: ``graphattn.decoding.generate`` -- each step runs only the new token through the
  layers, attending the cached keys/values through the pattern's row (``gather_rows``);
* recompute: at every step a full forward pass over prompt + tokens so far, keeping the last
  position's logits (what decoding costs without a cache).

Both must produce the same tokens (checked). Reports the median time of interleaved runs and the
speed-up; writes experiments/results/bench_decoding.{json,md}.

    python experiments/bench_decoding.py            # about 10 minutes on 2 CPU cores
    python experiments/bench_decoding.py --quick    # smoke test
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import graphattn
from graphattn.decoding import generate
from graphattn.models import CausalLM, TransformerConfig

RESULTS = Path(__file__).resolve().parent / "results"
PATTERNS = {
    "causal (full)": "causal",
    "local(window=32, causal)": "local(window=32, causal=True)",
    "bigbird(causal)": "bigbird(window=16, num_global=2, num_random=8, causal=True)",
}


def recompute_greedy(model: CausalLM, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding without a cache: a full forward pass per new token."""
    sequence = prompts
    out = []
    for _ in range(new_tokens):
        token = model(sequence)[:, -1].argmax(-1)  # [B]
        out.append(token)
        sequence = torch.cat([sequence, token[:, None]], 1)
    return torch.stack(out, 1)


def cached_greedy(model: CausalLM, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return generate(model, prompts, max_new_tokens=new_tokens, eos_token_id=None).sequences


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.batch_sizes, args.d_model, args.layers, args.repeats = 16, [2], 32, 1, 1
    torch.set_num_threads(args.threads)
    rows = []
    for name, pattern in PATTERNS.items():
        config = TransformerConfig(
            vocab_size=args.vocab, d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
            dropout=0.0, decoder_pattern=pattern, max_positions=args.prompt + args.new_tokens,
        )
        torch.manual_seed(0)
        model = CausalLM(config).eval()
        for batch in args.batch_sizes:
            generator = torch.Generator().manual_seed(batch)
            prompts = torch.randint(4, args.vocab, (batch, args.prompt), generator=generator)
            times = {"cached": [], "recompute": []}
            with torch.no_grad():
                cached_tokens = cached_greedy(model, prompts, args.new_tokens)  # warm-up and reference
                recomputed = recompute_greedy(model, prompts, args.new_tokens)
                same = bool(torch.equal(cached_tokens, recomputed))
                for _ in range(args.repeats):
                    for kind, function in (("cached", cached_greedy), ("recompute", recompute_greedy)):
                        start = time.perf_counter()
                        function(model, prompts, args.new_tokens)
                        times[kind].append(time.perf_counter() - start)
            cached, recompute = statistics.median(times["cached"]), statistics.median(times["recompute"])
            row = {
                "pattern": name, "spec": pattern, "batch": batch, "new_tokens": args.new_tokens,
                "cached_seconds": cached, "recompute_seconds": recompute, "speedup": recompute / cached,
                "same_tokens": same, "cached_ms_per_token": 1e3 * cached / args.new_tokens,
            }
            rows.append(row)
            print(
                f"[bench_decoding] {name:26s} batch {batch}: cached {cached:.2f} s, recompute {recompute:.2f} s, "
                f"speed-up {row['speedup']:.1f}x, same tokens: {same}", flush=True,
            )
    machine = {
        "python": platform.python_version(), "torch": torch.__version__, "graphattn": graphattn.__version__,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
    }
    out = Path(args.out) if not args.quick else Path("/tmp/graphattn-bench-decoding")
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "experiments/bench_decoding.py", *sys.argv[1:]])
    (out / "bench_decoding.json").write_text(json.dumps({"command": command, "machine": machine, "settings": vars(args), "results": rows}, indent=2))
    lines = [
        "# Key/value-cache decoding vs recomputation (experiments/bench_decoding.py)",
        "",
        f"Command: `{command}`",
        "",
        f"CausalLM with random weights: d_model {args.d_model}, {args.layers} layers, {args.heads} heads, vocabulary "
        f"{args.vocab}; greedy, {args.prompt}-token prompt, {args.new_tokens} new tokens; median of {args.repeats} "
        f"interleaved runs; {torch.get_num_threads()} CPU threads.",
        "",
        "| pattern | batch | cached | recompute | speed-up | ms / token (cached) | same tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pattern']} | {r['batch']} | {r['cached_seconds']:.2f} s | {r['recompute_seconds']:.2f} s | "
            f"**{r['speedup']:.1f}x** | {r['cached_ms_per_token']:.1f} | {r['same_tokens']} |"
        )
    lines += ["", f"Machine: {json.dumps(machine)}", ""]
    (out / "bench_decoding.md").write_text("\n".join(lines))
    print(f"[bench_decoding] wrote {out / 'bench_decoding.md'}")


if __name__ == "__main__":
    main()
