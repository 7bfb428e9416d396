"""MQAR-style recall: read N synthetic key-value facts into the state, then give back one of them.

Each query is a fresh context of ``n_pairs`` facts written in the sentence style of the training
episodes' synthetic facts ("The access code of the locker C177 is 9624."), 3-6 facts to a passage
titled "Registry sheet k", and one question about a fact chosen uniformly ("What is the access code
of the locker C177?"). Accuracy against ``n_pairs`` is the recall curve (Arora et al., 2023,
"Zoology", multi-query associative recall).

Guarantees (the tests check them):

- deterministic: the same (seed, n_pairs, query number) gives the same context and question;
  the random streams are namespaced ``mqar:`` and never meet the episode builder's;
- entity names are fresh: every name contains a syllable with an ``x`` (no syllable of the
  training builder has one) and every code has three digits (the builder's have one or two), so no
  key of the training data can come back;
- within a context keys and values are distinct, and no value occurs inside another fact's
  sentence, so the answer occurs exactly once in the passages.

Passages are read in the order generated (the asked fact is at a uniformly random depth), not
re-ranked: the curve measures what the state holds, not what the retriever put last.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from app.prompt import PassageText

from .episodes import Item, Point

_FIRST = ["Alma", "Bruno", "Celia", "Dario", "Edith", "Fabian", "Gisela", "Henrik", "Ilse", "Jakob", "Kira", "Lorenzo",
          "Mira", "Nils", "Olga", "Pavel", "Rania", "Silas", "Tessa", "Viktor", "Wanda", "Yara", "Zeno", "Anouk"]
_LAST = ["Achterberg", "Bauer", "Carvalho", "Dahl", "Engel", "Ferreira", "Grimaldi", "Holm", "Iversen", "Jovanovic",
         "Kaplan", "Lehmann", "Mendes", "Nygaard", "Olsen", "Pereira", "Rossi", "Schmid", "Toivonen", "Vogel"]
_COLOURS = ["beige", "coral", "emerald", "fuchsia", "indigo", "khaki", "lavender", "magenta", "turquoise", "burgundy",
            "lilac", "plum", "slate grey", "sea green", "sky blue", "bronze"]
_PORTS = ["Aarhus", "Bilbao", "Cadiz", "Dundee", "Esbjerg", "Faro", "Gijon", "Hamburg", "Inverness", "Klaipeda",
          "Lorient", "Malmo", "Naples", "Porto", "Riga", "Stavanger", "Tallinn", "Trieste", "Valencia", "Zadar"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_WORDS = ["aspen", "basalt", "cedar", "dune", "fjord", "garnet", "heron", "iris", "jasper", "kestrel", "lagoon",
          "nectar", "onyx", "pebble", "raven", "sierra", "topaz", "umber", "velvet", "zephyr"]
_SYLLABLES = ["pa", "nu", "rek", "vi", "dor", "sel", "ta", "mo", "lin", "ga", "bru", "fe", "ho", "ki", "zan", "le"]
_X_SYLLABLES = ["xa", "xi", "rax", "lex", "nox", "ux", "dex", "zix"]
_CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_TEMPLATES = ("The {a} of the {e} is {v}.", "For the {e}, the {a} is {v}.",
              "Records show that the {a} of the {e} is {v}.")


def _person(r: random.Random) -> str:
    return f"{r.choice(_FIRST)} {r.choice(_LAST)}"


def _serial(r: random.Random) -> str:
    return f"{r.choice('ABCDEFGHKMNPRSTXZ')}{r.choice('ABCDEFGHKMNPRSTXZ')}-{r.randint(1000, 99999)}"


# attribute -> (entity types, value maker): the attributes and entity types of the training facts
ATTRIBUTES: dict[str, tuple[tuple[str, ...], Callable[[random.Random], str]]] = {
    "access code": (("vault", "locker", "gate", "safe"), lambda r: str(r.randint(1000, 9999))),
    "owner": (("boat", "workshop", "warehouse", "orchard"), _person),
    "colour": (("car", "kite", "tent", "flag"), lambda r: r.choice(_COLOURS)),
    "home port": (("ship", "ferry", "trawler", "yacht"), lambda r: r.choice(_PORTS)),
    "launch date": (("satellite", "probe", "rocket"),
                    lambda r: f"{r.randint(1, 28)} {r.choice(_MONTHS)} {r.randint(1961, 2049)}"),
    "serial number": (("printer", "engine", "router", "turbine"), _serial),
    "radio frequency": (("beacon", "station", "transmitter"), lambda r: f"{r.randint(30, 990)}.{r.randint(0, 9)} MHz"),
    "password": (("account", "server", "terminal"), lambda r: f"{r.choice(_WORDS)}{r.randint(10, 999)}"),
    "room number": (("office", "laboratory", "archive", "studio"), lambda r: str(r.randint(100, 999))),
    "capacity": (("tank", "reservoir", "cistern"), lambda r: f"{r.randint(2, 900) * 10} litres"),
    "head keeper": (("lighthouse", "museum", "library"), _person),
    "founding year": (("guild", "club", "choir", "society"), lambda r: str(r.randint(1500, 2020))),
}


def fresh_name(r: random.Random) -> str:
    """Two or three syllables, one of them with an ``x``: never a name of the training facts."""
    parts = [r.choice(_SYLLABLES) for _ in range(r.randint(1, 2))]
    parts.insert(r.randint(0, len(parts)), r.choice(_X_SYLLABLES))
    return "".join(parts).capitalize()


def fresh_code(r: random.Random) -> str:
    """A letter and three digits (``C177``): the training facts' codes have one or two digits."""
    return f"{r.choice(_CODE_LETTERS)}{r.randint(100, 999)}"


def kv_context(n_pairs: int, r: random.Random) -> tuple[list[PassageText], list[tuple[str, str, str]]]:
    """``n_pairs`` facts ``(attribute, entity, value)`` and the passages stating them (3-6 per passage)."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
    names = list(ATTRIBUTES)
    facts: list[tuple[str, str, str]] = []
    sentences: list[str] = []
    keys: set[tuple[str, str]] = set()
    tries = 0
    while len(facts) < n_pairs:
        tries += 1
        if tries > 200 * n_pairs:
            raise RuntimeError(f"cannot make {n_pairs} distinct facts")
        attr = r.choice(names)
        types, make_value = ATTRIBUTES[attr]
        entity = f"{r.choice(types)} {fresh_name(r) if r.random() < 0.6 else fresh_code(r)}"
        value = make_value(r)
        sentence = r.choice(_TEMPLATES).format(a=attr, e=entity, v=value)
        low, v_low = sentence.lower(), value.lower()
        if ((attr, entity) in keys or low.count(v_low) != 1 or any(v_low in s.lower() for s in sentences)
                or any(v.lower() in low for _, _, v in facts)):
            continue
        keys.add((attr, entity))
        facts.append((attr, entity, value))
        sentences.append(sentence)
    passages, first_sheet, i = [], r.randint(1, 900), 0
    while i < len(sentences):
        k = r.randint(3, 6)
        passages.append(PassageText(" ".join(sentences[i : i + k]), f"Registry sheet {first_sheet + len(passages)}"))
        i += k
    return passages, facts


def mqar_items(n_pairs: int, n_queries: int, seed: int = 0) -> list[Item]:
    """``n_queries`` independent contexts of ``n_pairs`` facts, one question each."""
    items = []
    for q in range(n_queries):
        r = random.Random(f"mqar:{seed}:{n_pairs}:{q}")
        passages, facts = kv_context(n_pairs, r)
        attr, entity, value = facts[r.randrange(n_pairs)]
        items.append(Item(f"What is the {attr} of the {entity}?", passages, value, "mqar", f"mqar-{n_pairs}-{q}",
                          closed_book_control=True))
    return items


def mqar_points(pairs: Sequence[int], n_queries: int, layout: str, seed: int = 0) -> list[Point]:
    return [Point("mqar", str(n), layout, mqar_items(n, n_queries, seed), x=float(n)) for n in sorted(set(pairs))]
