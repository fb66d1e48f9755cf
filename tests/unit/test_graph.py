"""lepton.graph: the RDF store, SPARQL limits, WordNet and triple loaders, reasoning and
embeddings, on real data (WordNet 3.0 from Debian wordnet-base, Nations from pykeen's
files)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import lepton as lp
from lepton.errors import (
    DataSourceMissingError,
    GraphError,
    GraphNotFoundError,
    GraphReadOnlyError,
    QueryLimitError,
    SparqlError,
)
from lepton.graph import INFERRED, Embedding, Graph, TripleSplits, load_triples, load_wordnet
from lepton.graph._models import KGEModel

EX = "http://example.org/"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
OWL = "http://www.w3.org/2002/07/owl#"


def _have_wordnet() -> bool:
    try:
        lp.graph._data.wordnet_dir()
    except DataSourceMissingError:
        return False
    return True


def _have_nations() -> bool:
    try:
        load_triples("nations")
    except DataSourceMissingError:
        return False
    return True


needs_wordnet = pytest.mark.skipif(
    not _have_wordnet(), reason="WordNet 3.0 absent: apt-get install wordnet-base"
)
needs_nations = pytest.mark.skipif(
    not _have_nations(), reason="Nations absent: pip install --no-deps pykeen"
)


# -- the store -----------------------------------------------------------------------


def test_lp_graph_is_reachable_lazily() -> None:
    assert lp.graph.Graph is Graph
    assert lp.graph.open is lp.graph.open_graph


def test_create_persists_under_lepton_home_and_reopens(tmp_path: Path) -> None:
    g = lp.graph.create("people")
    assert g.folder == lp.graph.graphs_dir() / "people"
    assert g.store_dir is not None
    assert g.store_dir.parent == g.folder
    assert g.store_dir.is_dir()
    csv = tmp_path / "people.csv"
    csv.write_text("head,relation,tail\nalice,knows,bob\nbob,knows,carol\nalice,knows,bob\n")
    assert g.load(csv) == 2  # the repeated row is one triple
    assert lp.graph.list_graphs() == ["people"]
    again = lp.graph.open("people")
    rows = again.query("SELECT ?t WHERE { ?h ?r ?t } ORDER BY ?t").column("t")
    assert rows == [g.entity("bob"), g.entity("carol")]
    assert again.meta["sources"][0]["triples"] == 2
    with pytest.raises(GraphError, match="already exists"):
        lp.graph.create("people")
    lp.graph.delete("people")
    assert lp.graph.list_graphs() == []
    with pytest.raises(GraphNotFoundError, match="no graph named 'people'"):
        lp.graph.open("people")


def test_a_graph_deleted_while_still_held_is_gone_and_its_name_is_fresh(tmp_path: Path) -> None:
    csv = tmp_path / "big.csv"
    rows = "\n".join(f"n{i},links,n{i + 1}" for i in range(5000))
    csv.write_text("head,relation,tail\n" + rows + "\n")
    held = lp.graph.create("busy")
    for _ in range(3):  # several loads: RocksDB flushes and compacts in the background
        held.load(csv)
    lp.graph.delete("busy")
    assert lp.graph.list_graphs() == []
    assert sorted(p.name for p in lp.graph.graphs_dir().iterdir()) == []
    fresh = lp.graph.create("busy")
    assert fresh.count() == 0  # nothing of the old store came back
    small = tmp_path / "small.csv"
    small.write_text("head,relation,tail\na,b,c\n")
    assert fresh.load(small) == 1
    assert lp.graph.open("busy").count() == 1


def test_bad_names_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match="not valid"):
        lp.graph.create("../etc")
    g = Graph.memory("t")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(GraphError, match="head,relation,tail"):
        g.load(bad)
    broken = tmp_path / "broken.nt"
    broken.write_text("<http://x/a> <http://x/b> .\n")
    with pytest.raises(GraphError, match="not valid"):
        g.load(broken)
    with pytest.raises(GraphError, match="cannot tell the format"):
        g.load(tmp_path / "bad.csv", format="xml")


def test_turtle_and_ntriples_import_and_the_three_query_forms() -> None:
    g = Graph.memory("t")
    ttl = b"""@prefix ex: <http://example.org/> .
    ex:alice ex:age 30 ; ex:name "Alice" ; ex:knows ex:bob .
    ex:bob ex:knows ex:carol ."""
    assert g.load(ttl, format="ttl") == 4
    assert (
        g.load(
            b'<http://example.org/carol> <http://example.org/age> "41"^^'
            b"<http://www.w3.org/2001/XMLSchema#integer> .\n",
            format="nt",
        )
        == 1
    )
    sel = g.query(
        "PREFIX ex: <http://example.org/> SELECT ?who ?age WHERE { ?who ex:age ?age } ORDER BY ?age"
    )
    assert sel.form == "SELECT"
    assert sel.variables == ["who", "age"]
    assert sel.rows == [{"who": EX + "alice", "age": 30}, {"who": EX + "carol", "age": 41}]
    ask = g.query("ASK { <http://example.org/alice> <http://example.org/knows>+ ?x }")
    assert ask.form == "ASK"
    assert ask.boolean is True
    con = g.query(
        "PREFIX ex: <http://example.org/> CONSTRUCT { ?b ex:knownBy ?a } WHERE { ?a ex:knows ?b }"
    )
    assert sorted(con.rows) == [
        (EX + "bob", EX + "knownBy", EX + "alice"),
        (EX + "carol", EX + "knownBy", EX + "bob"),
    ]
    # a transitive path query
    far = g.query("SELECT ?x WHERE { <http://example.org/alice> <http://example.org/knows>+ ?x }")
    assert sorted(far.column("x")) == [EX + "bob", EX + "carol"]


def test_update_and_read_only_mode() -> None:
    g = lp.graph.create("kb")
    g.update("INSERT DATA { <http://example.org/a> <http://example.org/p> <http://example.org/b> }")
    assert len(g) == 1
    ro = lp.graph.open("kb", read_only=True)
    assert len(ro.query("SELECT * WHERE { ?s ?p ?o }")) == 1
    with pytest.raises(GraphReadOnlyError, match="read-only"):
        ro.update("DELETE WHERE { ?s ?p ?o }")
    with pytest.raises(GraphReadOnlyError, match="read-only"):
        ro.load_rows([("a", "b", "c")])
    with pytest.raises(GraphReadOnlyError, match="read-only"):
        ro.materialize()
    assert len(g) == 1
    with pytest.raises(SparqlError, match="use update"):
        g.query("DELETE WHERE { ?s ?p ?o }")
    with pytest.raises(SparqlError, match="use query"):
        g.update("SELECT * WHERE { ?s ?p ?o }")
    with pytest.raises(SparqlError, match="does not parse"):
        g.query("SELEC ?x WHERE { ?x ?p ?o }")
    with pytest.raises(SparqlError, match="LOAD is refused"):
        g.update("LOAD <http://127.0.0.1:1/data.nt>")


def test_service_is_refused_but_the_word_in_a_string_or_iri_is_not() -> None:
    g = Graph.memory("t")
    g.load_rows([("service", "is", "fine")])
    with pytest.raises(SparqlError, match="SERVICE is refused"):
        g.query("SELECT * WHERE { SERVICE <http://127.0.0.1:1/sparql> { ?s ?p ?o } }")
    with pytest.raises(SparqlError, match="SERVICE is refused"):
        g.query("select * where { service silent <http://127.0.0.1:1/q> { ?s ?p ?o } }")
    with pytest.raises(SparqlError, match="SERVICE is refused"):
        g.update("INSERT { ?s ?p ?o } WHERE { SERVICE <http://127.0.0.1:1/q> { ?s ?p ?o } }")
    ok = g.query(
        'SELECT ?service WHERE { ?service ?p ?o FILTER(?o != "SERVICE") '
        "FILTER(?p != <http://x/SERVICE>) } # SERVICE in a comment"
    )
    assert ok.column("service") == [g.entity("service")]


def test_result_size_and_time_limits() -> None:
    g = Graph.memory("t")
    g.load_rows([(f"n{i}", "next", f"n{i + 1}") for i in range(300)])
    with pytest.raises(QueryLimitError, match="max_rows=50"):
        g.query("SELECT * WHERE { ?s ?p ?o }", max_rows=50)
    assert len(g.query("SELECT * WHERE { ?s ?p ?o }", max_rows=300)) == 300
    # 300^3 = 27 million solutions: far past a 0.3 s limit
    started = time.perf_counter()
    with pytest.raises(QueryLimitError, match="time limit"):
        g.query("SELECT * WHERE { ?a ?p ?b . ?c ?q ?d . ?e ?r ?f }", timeout=0.3)
    assert time.perf_counter() - started < 10  # the caller got its answer, not the result
    with pytest.raises(GraphError, match="timeout must be > 0"):
        g.query("ASK {}", timeout=0)


# -- reasoning -----------------------------------------------------------------------


def _triples(g: Graph, *, inferred: bool) -> set[tuple[str, str, str]]:
    where = f"GRAPH <{INFERRED}> {{ ?s ?p ?o }}" if inferred else "?s ?p ?o"
    return {(r["s"], r["p"], r["o"]) for r in g.query(f"SELECT * WHERE {{ {where} }}").rows}


def test_rdfs_rules_infer_exactly_the_entailed_triples() -> None:
    g = Graph.memory("rdfs")
    g.load(
        f"""@prefix ex: <{EX}> . @prefix rdfs: <{RDFS}> .
        ex:Dog rdfs:subClassOf ex:Mammal . ex:Mammal rdfs:subClassOf ex:Animal .
        ex:hasParent rdfs:subPropertyOf ex:hasRelative .
        ex:hasParent rdfs:domain ex:Animal . ex:hasRelative rdfs:range ex:Animal .
        ex:rex a ex:Dog . ex:rex ex:hasParent ex:max .
        ex:rex ex:name "Rex" .""".encode(),
        format="ttl",
    )
    stats = g.materialize(["rdfs"])
    a, sc, t = EX + "Animal", RDFS + "subClassOf", RDF_TYPE
    assert _triples(g, inferred=True) == {
        (EX + "Dog", sc, a),  # rdfs11
        (EX + "rex", t, EX + "Mammal"),  # rdfs9
        (EX + "rex", t, a),  # rdfs9 twice, and rdfs2 (domain)
        (EX + "rex", EX + "hasRelative", EX + "max"),  # rdfs7
        (EX + "max", t, a),  # rdfs3 on the inferred hasRelative (not on the literal)
    }
    assert stats["inferred"] == 5
    assert stats["rounds"] >= 2
    assert len(g) == 8  # the asserted ones are untouched
    assert g.drop_inferred() == 5
    assert g.count(inferred=True) == 0
    assert g.materialize(["rdfs"])["inferred"] == 5  # recomputed the same
    plain = g.query(f"ASK {{ <{EX}max> a <{a}> }}", inferred=False)
    assert plain.boolean is False
    assert g.query(f"ASK {{ <{EX}max> a <{a}> }}").boolean is True


def test_symmetric_property_and_unknown_rules() -> None:
    g = Graph.memory("sym")
    g.load(
        f"@prefix ex: <{EX}> . @prefix owl: <{OWL}> . ex:sibling a owl:SymmetricProperty . "
        f"ex:ann ex:sibling ex:ben .".encode(),
        format="ttl",
    )
    g.materialize(["owl"])
    assert _triples(g, inferred=True) == {(EX + "ben", EX + "sibling", EX + "ann")}
    with pytest.raises(GraphError, match="unknown rule"):
        g.materialize(["rdfs", "magic"])


@pytest.fixture(scope="module")
def wordnet() -> lp.graph.WordNet:
    if not _have_wordnet():
        pytest.skip("WordNet 3.0 absent: apt-get install wordnet-base")
    return load_wordnet()


@needs_wordnet
def test_wordnet_parser_reads_every_synset_and_pointer(wordnet: lp.graph.WordNet) -> None:
    assert len(wordnet.synsets) == 117659
    assert len(wordnet.relations) == 377592
    counts = wordnet.counts()
    assert counts["hypernym"] == counts["hyponym"] == 89089
    assert counts["part_meronym"] == counts["part_holonym"] == 9097
    dog = wordnet.synsets["n02084071"]
    assert dog.words == ("dog", "domestic_dog", "Canis_familiaris")
    assert dog.gloss.startswith("a member of the genus Canis")
    assert ("n02084071", "hypernym", "n02083346", False) in wordnet.relations  # dog -> canine


DOG, CANINE, CARNIVORE, PLACENTAL, MAMMAL, DOMESTIC = (
    "n02084071", "n02083346", "n02075296", "n01886756", "n01861778", "n01317541",
)  # fmt: skip


@needs_wordnet
def test_transitive_hypernym_and_inverse_hyponym_on_a_wordnet_sample(
    wordnet: lp.graph.WordNet,
) -> None:
    sample = {DOG, CANINE, CARNIVORE, PLACENTAL, MAMMAL, DOMESTIC}
    g = Graph.memory("wn")
    rows = [
        (s, r, t)
        for s, r, t, _ in wordnet.relations
        if s in sample and t in sample and r in ("hypernym", "hyponym")
    ]
    assert len(rows) == 10  # 5 hypernym pointers and their 5 hyponym mirrors
    g.load_rows(rows)
    hyper, hypo = g.relation("hypernym"), g.relation("hyponym")
    g.update(
        f"INSERT DATA {{ <{hyper}> a <{OWL}TransitiveProperty> . "
        f"<{hypo}> <{OWL}inverseOf> <{hyper}> }}"
    )
    stats = g.materialize(["owl"])
    e = g.entity
    expected_hyper = {
        (DOG, CARNIVORE), (DOG, PLACENTAL), (DOG, MAMMAL),
        (CANINE, PLACENTAL), (CANINE, MAMMAL), (CARNIVORE, MAMMAL),
    }  # fmt: skip
    expected = {(e(a), hyper, e(b)) for a, b in expected_hyper}
    expected |= {(e(b), hypo, e(a)) for a, b in expected_hyper}
    assert _triples(g, inferred=True) == expected
    assert stats["inferred"] == 12
    # the transitive query answers the same from the asserted triples alone
    path = g.query(f"SELECT ?x WHERE {{ <{e(DOG)}> <{hyper}>+ ?x }}", inferred=False)
    closure = g.query(f"SELECT ?x WHERE {{ <{e(DOG)}> <{hyper}> ?x }}")
    assert sorted(path.column("x")) == sorted(closure.column("x"))
    assert len(closure) == 5


@needs_wordnet
def test_add_wordnet_with_labels(wordnet: lp.graph.WordNet) -> None:
    g = Graph.memory("wn")
    gained = lp.graph.add_wordnet(g, wordnet, relations=["part_meronym"], labels=True)
    assert gained == 9097 + 117659  # distinct part_meronym pairs + one label per synset
    label = g.query(f'SELECT ?s WHERE {{ ?s <{RDFS}label> "domestic cat" }}', timeout=5).column("s")
    assert label == [g.entity("n02121808")]


# -- datasets and embeddings ---------------------------------------------------------


@needs_nations
def test_nations_splits_are_the_standard_ones() -> None:
    d = load_triples("nations")
    assert (len(d.entities), len(d.relations)) == (14, 55)
    assert (len(d.train), len(d.valid), len(d.test)) == (1592, 199, 201)
    assert d.labels(d.train[:1])[0] == ("netherlands", "militaryalliance", "uk")
    with pytest.raises(GraphError, match="unknown triple dataset"):
        load_triples("freebase")
    g = Graph.memory("nations")
    assert lp.graph.add_triples(g, d) == 1592
    assert len(g) == 1592


@pytest.fixture(scope="module")
def nations() -> TripleSplits:
    if not _have_nations():
        pytest.skip("Nations absent: pip install --no-deps pykeen")
    return load_triples("nations")


def _random(d: TripleSplits, kind: str) -> dict[str, float]:
    """Untrained models of the same kind (3 seeds): the chance level of the metrics."""
    runs = [
        lp.graph.rank_metrics(
            KGEModel(kind, d.entities, d.relations, dim=32, seed=s), d.test, d.all
        )
        for s in range(3)
    ]
    return {k: sum(r[k] for r in runs) / 3 for k in ("mrr", "hits@1")}


@pytest.mark.parametrize(
    ("kind", "margin", "mrr_gain"),
    [("transe", 0.5, 0.07), ("distmult", 1.0, 0.2)],
)
def test_trained_embedding_beats_random_by_a_wide_margin(
    nations: TripleSplits, kind: str, margin: float, mrr_gain: float
) -> None:
    # Nations has 14 entities, so chance-level filtered MRR is already about 0.35-0.4
    emb = Embedding(kind, dim=32, epochs=40, batch_size=128, lr=0.01, negatives=4,
                    margin=margin, num_threads=1)  # fmt: skip
    emb.fit(nations)
    assert emb.result is not None
    losses = [r.train["loss"] for r in emb.result.history]
    assert losses[-1] < losses[0]
    metrics = emb.evaluate(nations.test, known=nations.all)
    chance = _random(nations, kind)
    assert metrics["mrr"] > chance["mrr"] + mrr_gain, (metrics, chance)
    assert metrics["hits@1"] > 1.8 * chance["hits@1"], (metrics, chance)
    assert 0 <= metrics["hits@1"] <= metrics["hits@3"] <= metrics["hits@10"] <= 1
    # unfiltered ranks can only be worse
    assert emb.evaluate(nations.test)["mrr"] <= metrics["mrr"]


def test_complex_and_rotate_train_and_every_model_saves_and_loads(
    nations: TripleSplits, tmp_path: Path
) -> None:
    for kind in ("complex", "rotate"):
        emb = Embedding(kind, dim=16, epochs=5, negatives=2, num_threads=1).fit(nations)
        before = emb.evaluate(nations.test, known=nations.all)
        back = Embedding.load(emb.save(tmp_path / kind))
        assert back.kind == kind
        assert back.evaluate(nations.test, known=nations.all) == before
        assert back.predict_tail("usa", "exports3", k=3) == emb.predict_tail("usa", "exports3", k=3)


def test_predict_tail_head_and_similar(nations: TripleSplits) -> None:
    emb = Embedding("distmult", dim=32, epochs=30, negatives=4, num_threads=1).fit(nations)
    top = emb.predict_tail("usa", "exports3", k=5)
    assert len(top) == 5
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    model = emb.model
    assert model is not None
    h, r = nations.entity_index["usa"], nations.relation_index["exports3"]
    scores = model.score(torch.tensor([h] * 14), torch.tensor([r] * 14), torch.arange(14))
    assert top[0][0] == nations.entities[int(scores.argmax())]
    assert "uk" not in [e for e, _ in emb.predict_tail("usa", "exports3", k=14, exclude=["uk"])]
    heads = emb.predict_head("exports3", "usa", k=3)
    assert len(heads) == 3
    sims = emb.similar("usa", k=3)
    assert len(sims) == 3
    assert "usa" not in [e for e, _ in sims]
    assert all(-1.0 <= s <= 1.0 for _, s in sims)
    with pytest.raises(GraphError, match="unknown entity 'atlantis'"):
        emb.predict_tail("atlantis", "exports3")
    with pytest.raises(GraphError, match="unknown embedding model"):
        Embedding("transh")


def test_score_all_matches_score_one_for_every_model(nations: TripleSplits) -> None:
    for kind in ("transe", "distmult", "complex", "rotate"):
        m = KGEModel(kind, nations.entities, nations.relations, dim=8, seed=1)
        b = nations.test[:5]
        tails = m.score_tails(b[:, 0], b[:, 1])
        heads = m.score_heads(b[:, 1], b[:, 2])
        assert torch.allclose(tails[torch.arange(5), b[:, 2]], m(b), atol=1e-5), kind
        assert torch.allclose(heads[torch.arange(5), b[:, 0]], m(b), atol=1e-5), kind


def test_a_trained_embedding_registers_and_loads_back(nations: TripleSplits) -> None:
    emb = Embedding("distmult", dim=8, epochs=2, num_threads=1).fit(nations)
    assert emb.model is not None
    version = lp.register(emb.model, "nations-distmult")
    loaded = lp.load_model(f"nations-distmult:{version.version}")
    back = Embedding.from_model(loaded)  # type: ignore[arg-type]
    assert back.model is not None
    assert back.model.entities == nations.entities
    assert back.predict_tail("usa", "exports3", k=3) == emb.predict_tail("usa", "exports3", k=3)
    with pytest.raises(GraphError, match="expected a kg-embedding model"):
        Embedding.from_model(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
