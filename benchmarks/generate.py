"""lp.models.GPT benchmark: a character GPT trained for a few minutes on WordNet glosses.

Measured in one run, on this machine, on one CPU thread:

1. The corpus: the 117,659 WordNet glosses, shuffled (seed 0); the last ``--held-out``
   glosses are held out, the rest are the training pool. The tokenizer is every
   character of the pool (a held-out character outside it is the "unknown" id, and
   counts against every model alike).
2. Two baselines, fitted on the **whole** training pool (7M characters) in this run:
   a character unigram model (add-one smoothing) and a character bigram model (add-k,
   k chosen on the first half of the held-out text, reported on the whole).
3. ``lp.models.GPT`` (pre-LN decoder, causal SDPA, tied embeddings; the size below)
   trained from scratch through ``lp.fit`` for about ``--minutes`` minutes: a probe of a
   few steps measures the step rate, then one epoch over as many 128-character windows
   of the pool as the budget allows (one-cycle schedule). It sees a fraction of the
   pool; the baselines see all of it.
4. Held-out bits per character of the three (``log2`` of ``lp.text.perplexity``; the
   baselines' as the mean ``-log2 p``), and samples at temperature 0.8.

Honest scale: this is a ~0.8M-parameter model trained for minutes on a CPU; it learns
English spelling and the glosses' phrasing, not facts.

Usage:
    .venv/bin/python benchmarks/generate.py                 # 10 minutes of training
    .venv/bin/python benchmarks/generate.py --minutes 2     # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter

import numpy as np
import torch

import lepton as lp
from lepton.models import GPT, CharTokenizer


class StepTimer(lp.train.Callback):
    """When each optimizer step ended."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_batch_end(self, state: lp.train.TrainState) -> None:
        self.times.append(time.perf_counter())


def unigram_bpc(train: list[int], test: list[int], size: int) -> float:
    counts = np.bincount(train, minlength=size).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[test[1:]].mean())  # the first character has no predecessor


def bigram_bpc(train: list[int], test: list[int], size: int, k: float) -> float:
    pairs = np.asarray(train[:-1]) * size + np.asarray(train[1:])
    counts = np.bincount(pairs, minlength=size * size).reshape(size, size) + k
    logp = np.log2(counts / counts.sum(axis=1, keepdims=True))
    t = np.asarray(test)
    return float(-logp[t[:-1], t[1:]].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--held-out", type=int, default=2000, help="glosses held out")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    glosses = list(lp.data.load("wordnet-glosses").texts)
    order = np.random.default_rng(0).permutation(len(glosses))
    shuffled = [glosses[i] for i in order]
    pool, held = shuffled[: -args.held_out], shuffled[-args.held_out :]
    tokenizer = CharTokenizer.from_texts(["".join(t + "\n" for t in pool)])
    train_ids = tokenizer.encode("".join(t + "\n" for t in pool))
    test_ids = tokenizer.encode("".join(t + "\n" for t in held))
    size = tokenizer.size
    print(f"pool: {len(pool):,} glosses, {len(train_ids):,} chars; held out: {len(held):,} "
          f"glosses, {len(test_ids):,} chars; vocabulary {size}")  # fmt: skip

    uni = unigram_bpc(train_ids, test_ids, size)
    half = test_ids[: len(test_ids) // 2]
    k = min((0.01, 0.03, 0.1, 0.3, 1.0), key=lambda k: bigram_bpc(train_ids, half, size, k))
    bi = bigram_bpc(train_ids, test_ids, size, k)

    def model() -> GPT:
        torch.manual_seed(0)
        return GPT(vocab=tokenizer.vocab, context=args.context, d_model=args.d_model,
                   n_heads=args.heads, n_layers=args.layers, dropout=0.0)  # fmt: skip

    # probe: the step rate of this model on this machine, now (the first steps excluded)
    probe_data = lp.text.LanguageModelData(pool[:600], tokenizer, context=args.context)
    timer = StepTimer()
    lp.fit(model(), probe_data.dataset, epochs=1, batch_size=args.batch_size, lr=args.lr,
           quiet=True, num_threads=args.threads, callbacks=[timer])  # fmt: skip
    per_step = float(np.median(np.diff(timer.times[2:])))
    steps = max(10, int(args.minutes * 60 / per_step))
    # as many glosses as `steps` batches of windows need (about 60 characters each)
    need = steps * args.batch_size * (args.context + 1)
    take, chars = 0, 0
    while take < len(pool) and chars < need:
        chars += len(pool[take]) + 1
        take += 1
    data = lp.text.LanguageModelData(pool[:take], tokenizer, context=args.context)
    net = model()
    params = sum(p.numel() for p in net.parameters())
    print(f"GPT: {params:,} parameters; {per_step:.3f} s/step measured; training "
          f"{len(data):,} windows ({len(data) * args.context:,} chars, {take:,} glosses) "
          f"for 1 epoch")  # fmt: skip
    started = time.perf_counter()
    result = lp.fit(net, data.dataset, epochs=1, batch_size=args.batch_size, lr=args.lr,
                    schedule="onecycle", grad_clip=1.0, quiet=True,
                    num_threads=args.threads)  # fmt: skip
    train_s = time.perf_counter() - started
    ppl = lp.text.perplexity(net, held, num_threads=args.threads)
    gpt = math.log2(ppl)
    samples = [net.generate(p, 160, temperature=0.8, seed=s)
               for s, p in enumerate(["a dog ", "the act of ", "(music) "])]  # fmt: skip

    print(f"\nheld-out bits per character ({len(test_ids):,} chars)")
    print(f"  {'char unigram (add-1)':<34} {uni:6.3f}")
    print(f"  {f'char bigram (add-{k:g})':<34} {bi:6.3f}")
    print(
        f"  {'lp.models.GPT, ' + f'{train_s / 60:.1f} min':<34} {gpt:6.3f}   "
        f"(perplexity {ppl:.2f}; train loss {result.history[-1].train['loss']:.3f} nats)"
    )
    print("\nsamples (temperature 0.8):")
    for prompt, text in zip(["a dog ", "the act of ", "(music) "], samples, strict=True):
        print(f"  {prompt!r} -> {text.splitlines()[0] if text.strip() else text!r}")
    record = {
        "unigram_bpc": uni, "bigram_bpc": bi, "bigram_k": k, "gpt_bpc": gpt,
        "gpt_perplexity": ppl, "train_seconds": train_s, "params": params,
        "windows": len(data), "threads": args.threads, "samples": samples,
        "chars_seen": len(data) * args.context, "pool_chars": len(train_ids),
        "top_chars": Counter(tokenizer.decode(test_ids)).most_common(3),
    }  # fmt: skip
    print(json.dumps(record, default=str))


if __name__ == "__main__":
    main()
