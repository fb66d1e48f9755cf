"""Knowledge-graph benchmark: lp.graph against PyKEEN (link prediction) and owlrl on rdflib
(materialization), measured in one run.

1. Link prediction on Nations, Kinships and UMLS (the standard splits, the files inside
   PyPI pykeen): ``lp.graph.Embedding`` and PyKEEN's ``pipeline`` with the same model,
   dimension, epochs, batch size, optimizer (Adam, same lr), negative sampler (basic,
   same negatives per positive), loss and no regularizer; both report both-sided filtered
   MRR and Hits@10 with realistic ranks, and training time, on one torch thread each.
2. Materialization on a WordNet sample (hypernym/hyponym edges inside the ``mammal``
   subtree; hypernym declared ``owl:TransitiveProperty``, hyponym its ``owl:inverseOf``):
   ``Graph.materialize(["owl"])`` against ``owlrl.DeductiveClosure(OWLRL_Semantics)`` on
   rdflib; the inferred hypernym/hyponym triples must be the same set; time side by side.
3. SPARQL latency of a transitive hypernym query (``dog hypernym+ ?x``) on all of WordNet
   in the store, and on rdflib with the hypernym triples.

The references run in their own venv (``benchmarks/.venvs/pykeen``: ``torch==2.13.0``
first, then ``pykeen owlrl rdflib``), created on first use.

Usage:
    .venv/bin/python benchmarks/graph.py
    .venv/bin/python benchmarks/graph.py --datasets nations --models transe,distmult --epochs 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import lepton as lp
from lepton.graph import Embedding, Graph, load_triples, load_wordnet

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "pykeen"
OWL = "http://www.w3.org/2002/07/owl#"
PYKEEN_MODEL = {"transe": "TransE", "distmult": "DistMult", "complex": "ComplEx",
                "rotate": "RotatE"}  # fmt: skip
PYKEEN_LOSS = {"margin": "marginranking", "softplus": "softplus", "nssa": "nssa"}

REFERENCE = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import torch
torch.set_num_threads(1)
out = {}
if args["task"] == "link":
    from pykeen.pipeline import pipeline
    model_kwargs = {"embedding_dim": args["dim"]}
    if args["model"] == "TransE":
        model_kwargs["scoring_fct_norm"] = args["p"]
    if args["model"] in ("DistMult", "ComplEx"):
        model_kwargs["regularizer"] = None
    loss_kwargs = {}
    if args["loss"] == "marginranking":
        loss_kwargs["margin"] = args["margin"]
    if args["loss"] == "nssa":
        loss_kwargs = {"margin": args["margin"], "adversarial_temperature": args["temperature"]}
    t = time.perf_counter()
    result = pipeline(
        dataset=args["dataset"], model=args["model"], model_kwargs=model_kwargs,
        loss=args["loss"], loss_kwargs=loss_kwargs, optimizer="adam",
        optimizer_kwargs={"lr": args["lr"]}, training_loop="slcwa", negative_sampler="basic",
        negative_sampler_kwargs={"num_negs_per_pos": args["negatives"]},
        training_kwargs={"num_epochs": args["epochs"], "batch_size": args["batch_size"],
                         "use_tqdm": False},
        evaluation_kwargs={"use_tqdm": False}, random_seed=args["seed"], device="cpu",
    )
    m = result.metric_results
    out = {"mrr": m.get_metric("both.realistic.inverse_harmonic_mean_rank"),
           "hits@10": m.get_metric("both.realistic.hits_at_10"),
           "train_s": result.train_seconds, "total_s": time.perf_counter() - t}
elif args["task"] == "owlrl":
    import rdflib, owlrl
    g = rdflib.Graph(); g.parse(args["path"], format="nt")
    asserted = set(g)
    t = time.perf_counter()
    owlrl.DeductiveClosure(owlrl.OWLRL_Semantics).expand(g)
    seconds = time.perf_counter() - t
    keep = set(args["predicates"])
    inferred = sorted([str(s), str(p), str(o)] for s, p, o in set(g) - asserted
                      if str(p) in keep and isinstance(o, rdflib.URIRef))
    out = {"seconds": seconds, "inferred": inferred, "closure": len(g)}
elif args["task"] == "sparql":
    import rdflib
    g = rdflib.Graph(); g.parse(args["path"], format="nt")
    times = []
    for _ in range(args["repeat"]):
        t = time.perf_counter(); rows = list(g.query(args["query"]))
        times.append(time.perf_counter() - t)
    times.sort()
    out = {"median_ms": 1000 * times[len(times) // 2], "rows": len(rows)}
print("RESULT " + json.dumps(out))
"""


def ensure_venv() -> Path | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"building the reference venv {VENV} (torch==2.13.0, pykeen, owlrl, rdflib)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-qq"]
        if (
            subprocess.run([*pip, "torch==2.13.0"]).returncode
            or subprocess.run([*pip, "pykeen", "owlrl", "rdflib"]).returncode
        ):
            print("the reference venv could not be built; reporting Lepton only")
            return None
    return python


def reference(python: Path | None, args: dict[str, object]) -> dict[str, object] | None:
    if python is None:
        return None
    done = subprocess.run(
        [str(python), "-c", REFERENCE, json.dumps(args)], capture_output=True, text=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, object] = json.loads(line[len("RESULT ") :])
            return result
    print(f"reference failed ({args['task']}): {done.stderr.strip().splitlines()[-3:]}")
    return None


def _one(name: str, kind: str, seed: int, opts: argparse.Namespace, python: Path | None
         ) -> tuple[dict[str, float], dict[str, float] | None]:  # fmt: skip
    data = load_triples(name)
    emb = Embedding(kind, dim=opts.dim, epochs=opts.epochs, batch_size=opts.batch_size,
                    lr=opts.lr, negatives=opts.negatives, seed=seed, num_threads=1)  # fmt: skip
    emb.fit(data)
    ours = emb.evaluate(data.test, known=data.all)
    ours["train_s"] = emb.train_seconds()
    ref = reference(python, {
        "task": "link", "dataset": name, "model": PYKEEN_MODEL[kind], "dim": opts.dim,
        "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr,
        "negatives": opts.negatives, "loss": PYKEEN_LOSS[emb.loss], "margin": emb.margin,
        "temperature": emb.temperature, "p": emb.p, "seed": seed,
    })  # fmt: skip
    return ours, ({k: float(v) for k, v in ref.items()} if ref else None)  # type: ignore[arg-type]


def _mean(runs: list[dict[str, float]], key: str) -> float:
    return statistics.mean(r[key] for r in runs) if runs else float("nan")


def link_prediction(opts: argparse.Namespace, python: Path | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    seeds = list(range(opts.seed, opts.seed + opts.seeds))
    print(f"\n== link prediction (both-sided filtered, realistic ranks; 1 thread each; "
          f"mean of seeds {seeds}) ==")  # fmt: skip
    print(f"{'dataset':9} {'model':9} {'lepton MRR':>10} {'pykeen MRR':>10} {'diff':>7} "
          f"{'lepton H@10':>11} {'pykeen H@10':>11} {'lepton s':>8} {'pykeen s':>8}")  # fmt: skip
    for name in opts.datasets.split(","):
        for kind in opts.models.split(","):
            pairs = [_one(name, kind, seed, opts, python) for seed in seeds]
            ours = [o for o, _ in pairs]
            refs = [r for _, r in pairs if r is not None]
            om, pm = _mean(ours, "mrr"), _mean(refs, "mrr")
            rows.append({"dataset": name, "model": kind, "seeds": seeds, "lepton": ours,
                         "pykeen": refs})  # fmt: skip
            print(f"{name:9} {kind:9} {om:10.3f} {pm:10.3f} {om - pm:+7.3f} "
                  f"{_mean(ours, 'hits@10'):11.3f} {_mean(refs, 'hits@10'):11.3f} "
                  f"{_mean(ours, 'train_s'):8.1f} {_mean(refs, 'train_s'):8.1f}",
                  flush=True)  # fmt: skip
    return rows


def _subtree(wn: lp.graph.WordNet, root: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for s, r, t, _ in wn.relations:
        if r == "hyponym":
            children.setdefault(s, []).append(t)
    seen, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def reasoning(opts: argparse.Namespace, python: Path | None) -> dict[str, object]:
    wn = load_wordnet()
    sample = _subtree(wn, opts.root)
    rows = [(s, r, t) for s, r, t, _ in wn.relations
            if s in sample and t in sample and r in ("hypernym", "hyponym")]  # fmt: skip
    g = Graph.memory("wnsample")
    g.load_rows(rows)
    hyper, hypo = g.relation("hypernym"), g.relation("hyponym")
    g.update(f"INSERT DATA {{ <{hyper}> a <{OWL}TransitiveProperty> . "
             f"<{hypo}> <{OWL}inverseOf> <{hyper}> }}")  # fmt: skip
    print(
        f"\n== materialization: WordNet subtree of {opts.root} "
        f"({wn.synsets[opts.root].words[0]}): {len(sample)} synsets, {len(g)} triples =="
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = g.dump(Path(tmp) / "sample.nt")
        stats = g.materialize(["owl"])
        query = f"SELECT * WHERE {{ GRAPH <{lp.graph.INFERRED}> {{ ?s ?p ?o }} }}"
        ours = {(r["s"], r["p"], r["o"]) for r in g.query(query).rows}
        ref = reference(python, {"task": "owlrl", "path": str(path), "predicates": [hyper, hypo]})
    line = (
        f"lepton: {stats['inferred']} inferred in {stats['seconds']:.2f} s "
        f"({stats['rounds']} rounds)"
    )
    result: dict[str, object] = {"synsets": len(sample), "asserted": len(rows) + 2,
                                 "lepton_inferred": stats["inferred"],
                                 "lepton_s": stats["seconds"]}  # fmt: skip
    if ref is not None:
        theirs = {tuple(t) for t in ref["inferred"]}  # type: ignore[attr-defined]
        same = theirs == ours
        line += (f"; owlrl: {len(theirs)} hypernym/hyponym inferred in {ref['seconds']:.2f} s "
                 f"(closure {ref['closure']} triples); same set: {same}")  # fmt: skip
        result.update(owlrl_inferred=len(theirs), owlrl_s=ref["seconds"], same=same)
    print(line)
    return result


def sparql_latency(opts: argparse.Namespace, python: Path | None) -> dict[str, object]:
    wn = load_wordnet()
    g = Graph.memory("wordnet")
    t = time.perf_counter()
    lp.graph.add_wordnet(g, wn)
    load_s = time.perf_counter() - t
    q = f"SELECT ?x WHERE {{ <{g.entity('n02084071')}> <{g.relation('hypernym')}>+ ?x }}"
    times = []
    for _ in range(opts.repeat):
        res = g.query(q, timeout=10)
        times.append(res.seconds)
    ours = 1000 * statistics.median(times)
    print(f"\n== SPARQL: dog hypernym+ ?x ({len(res)} rows) ==")
    print(f"lepton (pyoxigraph, all of WordNet: {len(g)} triples, loaded in {load_s:.1f} s): "
          f"median {ours:.2f} ms over {opts.repeat}")  # fmt: skip
    out: dict[str, object] = {"lepton_ms": ours, "rows": len(res), "triples": len(g)}
    with tempfile.TemporaryDirectory() as tmp:
        hyper = Graph.memory("hyper")
        hyper.load_rows([(s, r, t) for s, r, t, _ in wn.relations if r == "hypernym"])
        path = hyper.dump(Path(tmp) / "hypernym.nt")
        q2 = q.replace(g.namespace, hyper.namespace)
        ref = reference(python, {"task": "sparql", "path": str(path), "query": q2,
                                 "repeat": opts.repeat})  # fmt: skip
    if ref is not None:
        print(f"rdflib (hypernym triples only: {len(hyper)}): median {ref['median_ms']:.2f} ms "
              f"({ref['rows']} rows)")  # fmt: skip
        out["rdflib_ms"] = ref["median_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="nations,umls,kinships")
    parser.add_argument("--models", default="transe,distmult,complex,rotate")
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per cell (mean reported)")
    parser.add_argument("--root", default="n01861778", help="WordNet sample root (mammal)")
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--skip", default="", help="comma list of: link,reasoning,sparql")
    parser.add_argument("--json", type=Path, help="write the figures here")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    python = ensure_venv()
    skip = set(opts.skip.split(","))
    out: dict[str, object] = {"settings": vars(opts) | {"json": None}}
    if "link" not in skip:
        out["link"] = link_prediction(opts, python)
    if "reasoning" not in skip:
        out["reasoning"] = reasoning(opts, python)
    if "sparql" not in skip:
        out["sparql"] = sparql_latency(opts, python)
    if opts.json:
        opts.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
