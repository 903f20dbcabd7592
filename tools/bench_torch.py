#!/usr/bin/python3
"""Times the Hugging Face-style eager PyTorch MoE block on moe bench's shapes.

The block is the one Hugging Face's Mixtral/OLMoE modeling code runs in eager mode: router
Linear, softmax, top-k, optional renormalization, then a Python loop over the experts with
index_select / index_add_. Weights are random, inputs rotate through --steps batches so decode
rows do not reuse cached weights, and each row reports the median of --repeats forwards at the
best of the --threads settings tried. Debian's python3-torch (`MOE_SETUP_EXTRA=torch
tools/setup.sh`) provides torch for /usr/bin/python3.

  tools/bench_torch.py --shape olmoe --tokens 1,16,128,512 --dtype f32,bf16 --threads 1,2
"""

import argparse
import json
import statistics
import sys
import time

SHAPES = {
    # name: (d_model, d_ff, num_experts, top_k, renormalize)
    "olmoe": (2048, 1024, 64, 8, False),
    "mixtral": (4096, 14336, 8, 2, True),
}


def build_block(torch, d_model, d_ff, num_experts, top_k, renormalize, dtype):
    nn = torch.nn
    F = torch.nn.functional

    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
            self.up_proj = nn.Linear(d_model, d_ff, bias=False)
            self.down_proj = nn.Linear(d_ff, d_model, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class SparseMoeBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(d_model, num_experts, bias=False)
            self.experts = nn.ModuleList([Expert() for _ in range(num_experts)])

        def forward(self, hidden):
            logits = self.gate(hidden)
            weights = F.softmax(logits, dim=1, dtype=torch.float)
            weights, selected = torch.topk(weights, top_k, dim=-1)
            if renormalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            weights = weights.to(hidden.dtype)
            out = torch.zeros_like(hidden)
            mask = F.one_hot(selected, num_classes=num_experts).permute(2, 1, 0)
            for e in range(num_experts):
                idx, top_x = torch.where(mask[e])
                if top_x.numel() == 0:
                    continue
                y = self.experts[e](hidden[top_x]) * weights[top_x, idx, None]
                out.index_add_(0, top_x, y.to(hidden.dtype))
            return out

    torch.manual_seed(1)
    block = SparseMoeBlock().to(dtype)
    block.eval()
    return block


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="olmoe", choices=sorted(SHAPES))
    parser.add_argument("--tokens", default="1,16,128,512")
    parser.add_argument("--dtype", default="f32,bf16")
    parser.add_argument("--threads", default="1,2", help="thread counts tried; the best is kept")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="input batches rotated through")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("bench_torch: no torch module; install python3-torch "
                 "(MOE_SETUP_EXTRA=torch tools/setup.sh) and run with /usr/bin/python3")

    d_model, d_ff, num_experts, top_k, renormalize = SHAPES[args.shape]
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    print(f"# bench_torch: {args.shape} d_model {d_model} d_ff {d_ff} experts {num_experts} "
          f"top_k {top_k}; torch {torch.__version__}; median of {args.repeats} forwards, "
          f"{args.steps} input batches; best of threads {args.threads}")
    print(f"{'dtype':5} {'tokens':>7} {'threads':>7} {'time_ms':>10} {'tokens/s':>10} {'GFLOP/s':>8}")
    for dtype_name in args.dtype.split(","):
        block = build_block(torch, d_model, d_ff, num_experts, top_k, renormalize,
                            dtypes[dtype_name])
        for tokens in [int(t) for t in args.tokens.split(",")]:
            gen = torch.Generator().manual_seed(tokens)
            inputs = [torch.randn(tokens, d_model, generator=gen).to(dtypes[dtype_name])
                      for _ in range(args.steps)]
            best = None
            for threads in [int(t) for t in args.threads.split(",")]:
                torch.set_num_threads(threads)
                times = []
                with torch.inference_mode():
                    block(inputs[0])  # warm-up
                    for r in range(args.repeats):
                        start = time.perf_counter()
                        block(inputs[r % len(inputs)])
                        times.append(time.perf_counter() - start)
                t = statistics.median(times)
                if best is None or t < best[0]:
                    best = (t, threads)
            seconds, threads = best
            flop = 2 * 3 * d_model * d_ff * tokens * top_k
            row = {"shape": args.shape, "dtype": dtype_name, "tokens": tokens, "threads": threads,
                   "ms": seconds * 1e3, "tokens_per_s": tokens / seconds,
                   "gflops": flop / seconds / 1e9}
            rows.append(row)
            print(f"{dtype_name:5} {tokens:7d} {threads:7d} {row['ms']:10.3f} "
                  f"{row['tokens_per_s']:10.1f} {row['gflops']:8.1f}", flush=True)
        del block
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
