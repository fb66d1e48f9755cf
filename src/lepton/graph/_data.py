"""Knowledge-graph data that ships with packages: WordNet 3.0 and Nations/Kinships/UMLS.

WordNet 3.0 comes from Debian ``wordnet-base`` (``/usr/share/wordnet``), read by our own
parser of its four data files (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``;
format in ``wndb(5WN)``): one line per synset, ``offset lex_filenum ss_type w_cnt (word
lex_id)* p_cnt (symbol offset pos source/target)* [frames] | gloss``. A synset's id is its
part of speech and offset, ``"n02084071"`` (satellite adjectives ``s`` share ``a``'s
file, so their ids use ``a``). Every pointer becomes a relation named after its symbol
(``@`` -> ``hypernym``, ``%p`` -> ``part_meronym``, ...); ``source/target`` ``0000`` marks
a semantic (synset-to-synset) pointer, anything else a lexical one (word-to-word, kept
at synset level with ``lexical=True``).

Nations, Kinships and UMLS are the tab-separated ``train/valid/test.txt`` splits that
PyPI ``pykeen`` ships in ``pykeen/datasets/<name>/`` (install it with
``pip install --no-deps pykeen``: only the files are read, pykeen is never imported).
``LEPTON_DATA_DIR/<name>/`` is searched first.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lepton.config import get_settings
from lepton.errors import DataFormatError, DataSourceMissingError, GraphError

__all__ = [
    "POINTERS",
    "TRIPLE_DATASETS",
    "Synset",
    "TripleSplits",
    "WordNet",
    "load_triples",
    "load_wordnet",
    "wordnet_dir",
]

#: WordNet pointer symbols (all parts of speech) -> relation names.
POINTERS: dict[str, str] = {
    "!": "antonym",
    "@": "hypernym",
    "@i": "instance_hypernym",
    "~": "hyponym",
    "~i": "instance_hyponym",
    "#m": "member_holonym",
    "#s": "substance_holonym",
    "#p": "part_holonym",
    "%m": "member_meronym",
    "%s": "substance_meronym",
    "%p": "part_meronym",
    "=": "attribute",
    "+": "derivationally_related",
    ";c": "domain_topic",
    "-c": "member_of_domain_topic",
    ";r": "domain_region",
    "-r": "member_of_domain_region",
    ";u": "domain_usage",
    "-u": "member_of_domain_usage",
    "*": "entailment",
    ">": "cause",
    "^": "also_see",
    "$": "verb_group",
    "&": "similar_to",
    "<": "participle",
    "\\": "pertainym",
}
_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_WORDNET_DIRS = (Path("/usr/share/wordnet"), Path("/usr/share/WordNet-3.0/dict"))
#: The triple datasets and their sizes (train, valid, test triples).
TRIPLE_DATASETS: dict[str, tuple[int, int, int]] = {
    "nations": (1592, 199, 201),
    "kinships": (8544, 1068, 1074),
    "umls": (5216, 652, 661),
}


@dataclass(frozen=True)
class Synset:
    """One WordNet synset: ``id`` (``"n02084071"``), part of speech (``n``, ``v``, ``a``,
    ``s``, ``r``), lexicographer file number, words, and gloss."""

    id: str
    pos: str
    lexfile: int
    words: tuple[str, ...]
    gloss: str


@dataclass
class WordNet:
    """WordNet parsed: ``synsets`` by id and ``relations`` as ``(source, relation,
    target, lexical)`` tuples (one per pointer in the data files)."""

    synsets: dict[str, Synset]
    relations: list[tuple[str, str, str, bool]]
    folder: Path

    def semantic(self) -> list[tuple[str, str, str]]:
        """The distinct synset-to-synset relations (lexical pointers left out)."""
        seen: dict[tuple[str, str, str], None] = {}
        for s, r, t, lexical in self.relations:
            if not lexical:
                seen[(s, r, t)] = None
        return list(seen)

    def triples(self) -> list[tuple[str, str, str]]:
        """Every distinct ``(source, relation, target)`` between synsets, lexical pointers
        included at synset level."""
        return list(dict.fromkeys((s, r, t) for s, r, t, _ in self.relations))

    def counts(self) -> dict[str, int]:
        """How many of each relation (every pointer counted)."""
        out: dict[str, int] = {}
        for _, r, _, _ in self.relations:
            out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def wordnet_dir(path: str | Path | None = None) -> Path:
    """The folder with WordNet's data files: ``path``, ``LEPTON_DATA_DIR/wordnet``, or
    Debian's ``/usr/share/wordnet``.

    Raises:
        DataSourceMissingError: None of them has the files.
    """
    candidates = [Path(path).expanduser()] if path is not None else []
    data_dir = get_settings().data_dir
    if path is None and data_dir is not None:
        candidates.append(data_dir / "wordnet")
    if path is None:
        candidates.extend(_WORDNET_DIRS)
    for folder in candidates:
        if all((folder / f).is_file() for f in _FILES):
            return folder
    raise DataSourceMissingError(
        f"WordNet 3.0's data files ({', '.join(_FILES)}) are not in "
        f"{', '.join(str(c) for c in candidates)}; install them with "
        f"`sudo apt-get install wordnet-base` (or run scripts/setup.sh)"
    )


def _id(pos: str, offset: str) -> str:
    return ("a" if pos == "s" else pos) + offset


def _parse_line(
    line: str, name: str, lineno: int
) -> tuple[Synset, list[tuple[str, str, str, bool]]]:
    data, _, gloss = line.partition(" | ")
    f = data.split()
    try:
        offset, lexfile, pos = f[0], int(f[1]), f[2]
        w_cnt = int(f[3], 16)
        words = tuple(f[4 + 2 * i] for i in range(w_cnt))
        i = 4 + 2 * w_cnt
        p_cnt = int(f[i])
        i += 1
        source = _id(pos, offset)
        relations = []
        for _ in range(p_cnt):
            symbol, target, tpos, st = f[i], f[i + 1], f[i + 2], f[i + 3]
            i += 4
            relation = POINTERS.get(symbol)
            if relation is None:
                raise DataFormatError(
                    f"{name} line {lineno}: unknown pointer symbol {symbol!r}; is this WordNet 3.0?"
                )
            relations.append((source, relation, _id(tpos, target), st != "0000"))
    except (IndexError, ValueError):
        raise DataFormatError(
            f"{name} line {lineno} is not a WordNet data line: {line[:80]!r}; reinstall "
            f"wordnet-base"
        ) from None
    synset = Synset(source, pos, lexfile, words, gloss.strip())
    return synset, relations


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.startswith("  "):  # the licence header lines start with two spaces
                yield n, line.rstrip("\n")


def load_wordnet(path: str | Path | None = None) -> WordNet:
    """Parse WordNet 3.0's data files (117,659 synsets).

    Raises:
        DataSourceMissingError: The files are not on this machine.
        DataFormatError: A line does not parse.
    """
    folder = wordnet_dir(path)
    synsets: dict[str, Synset] = {}
    relations: list[tuple[str, str, str, bool]] = []
    for name in _FILES:
        for n, line in _lines(folder / name):
            synset, rels = _parse_line(line, name, n)
            synsets[synset.id] = synset
            relations.extend(rels)
    missing = sum(1 for _, _, t, _ in relations if t not in synsets)
    if missing:
        raise DataFormatError(
            f"{missing} WordNet pointers in {folder} point at synsets that are not there; "
            f"the files are incomplete: reinstall wordnet-base"
        )
    return WordNet(synsets, relations, folder)


@dataclass
class TripleSplits:
    """A link-prediction dataset: label maps and ``(N, 3)`` int64 index triples
    ``[head, relation, tail]`` for each split."""

    name: str
    entities: list[str]
    relations: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    folder: Path | None = None
    entity_index: dict[str, int] = field(init=False, repr=False)
    relation_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.entity_index = {e: i for i, e in enumerate(self.entities)}
        self.relation_index = {r: i for i, r in enumerate(self.relations)}

    @property
    def all(self) -> torch.Tensor:
        """Every known triple (train, valid and test): what filtered ranking removes."""
        return torch.cat([self.train, self.valid, self.test])

    def labels(self, triples: torch.Tensor) -> list[tuple[str, str, str]]:
        """Index triples back to label triples."""
        return [
            (self.entities[h], self.relations[r], self.entities[t]) for h, r, t in triples.tolist()
        ]

    @classmethod
    def from_labels(
        cls,
        name: str,
        train: list[tuple[str, str, str]],
        valid: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
        test: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    ) -> TripleSplits:
        """Build the index from label triples (entities and relations sorted by label,
        the order PyKEEN uses too)."""
        every = [*train, *valid, *test]
        entities = sorted({h for h, _, _ in every} | {t for _, _, t in every})
        relations = sorted({r for _, r, _ in every})
        ei = {e: i for i, e in enumerate(entities)}
        ri = {r: i for i, r in enumerate(relations)}

        def index(rows: list[tuple[str, str, str]]) -> torch.Tensor:
            data = [(ei[h], ri[r], ei[t]) for h, r, t in rows]
            return torch.tensor(data, dtype=torch.int64).reshape(-1, 3)

        return cls(name, entities, relations, index(train), index(valid), index(test))


def _pykeen_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec("pykeen")  # finds the files; pykeen is not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / name


def _read_tsv(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataFormatError(f"{path} line {n} is not head<TAB>relation<TAB>tail: {line!r}")
        rows.append((parts[0], parts[1], parts[2]))
    return rows


def load_triples(name: str, path: str | Path | None = None) -> TripleSplits:
    """Nations, Kinships or UMLS with their standard train/valid/test splits.

    Args:
        name: ``"nations"``, ``"kinships"`` or ``"umls"``.
        path: A folder with ``train.txt``, ``valid.txt``, ``test.txt`` (tab-separated);
            by default ``LEPTON_DATA_DIR/<name>``, then the copy inside PyPI ``pykeen``.

    Raises:
        GraphError: An unknown name.
        DataSourceMissingError: The files are not on this machine.
        DataFormatError: A file does not parse or has the wrong number of triples.
    """
    if name not in TRIPLE_DATASETS:
        raise GraphError(f"unknown triple dataset {name!r}; choose from {sorted(TRIPLE_DATASETS)}")
    splits = ("train", "valid", "test")
    candidates: list[Path] = []
    if path is not None:
        candidates.append(Path(path).expanduser())
    else:
        data_dir = get_settings().data_dir
        if data_dir is not None:
            candidates.append(data_dir / name)
        packaged = _pykeen_dir(name)
        if packaged is not None:
            candidates.append(packaged)
    folder = next((c for c in candidates if all((c / f"{s}.txt").is_file() for s in splits)), None)
    if folder is None:
        raise DataSourceMissingError(
            f"the {name} files (train.txt, valid.txt, test.txt) are not in "
            f"{', '.join(map(str, candidates)) or 'any folder'}; install them with "
            f"`pip install --no-deps pykeen` (only its data files are used)"
        )
    rows = [_read_tsv(folder / f"{s}.txt") for s in splits]
    want = TRIPLE_DATASETS[name]
    if path is None and tuple(len(r) for r in rows) != want:
        raise DataFormatError(
            f"{folder} has {tuple(len(r) for r in rows)} train/valid/test triples where "
            f"{name} has {want}; reinstall pykeen (pip install --no-deps pykeen)"
        )
    out = TripleSplits.from_labels(name, *rows)
    out.folder = folder
    return out
