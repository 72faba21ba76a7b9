"""Entity resolution: the mentions an extractor found, as one entity per real-world name.

A pure function of the *set* of mentions: the same corpus in any order, in one call or
resolved again from its own output, gives the same entities and keys.

- `normalise` folds spelling: NFKC, casefold, apostrophes dropped ("McDonald's" =
  "McDonalds"), other punctuation and whitespace collapsed to single spaces ("&" and "#"
  are kept: AT&T, C#), a leading "the" and trailing corporate suffixes (Inc, Ltd, LLC,
  GmbH, Corp, Co, plc, ...) removed. Accents are kept: stripping combining marks is
  harmless for "Tomás" but destroys words in scripts whose vowels are marks (Devanagari,
  kana with dakuten); an extractor's alias can still link "Tomas" to "Tomás".
- Mentions are linked when their normalised names are equal, or when an alias of one
  equals the normalised name of another (union-find; the partition depends only on the
  set of links, never on their order). Two aliases alone never link: generic aliases
  ("the company") would chain unrelated entities.
- Per entity: the type is the most frequent (ties: allowlist order; types outside the
  allowlist count as Concept), the display name the most frequent spelling (ties:
  lexicographically smallest), the aliases every other spelling seen.
- key = "<Type>:<normalised display name>". The type is part of the key: the graph is
  written document by document, and without it one key would flip between types as
  documents that disagree are written in different orders; with it, Apple the company
  and apple the concept, resolved in different documents, stay two nodes. Within one
  call, mentions that share a normalised name merge whatever their types (we cannot tell
  homonyms apart from a name alone), so resolve a whole corpus for consistent typing.
"""

import functools
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from resources.neo4j.model import ENTITY_TYPES, FALLBACK_ENTITY_TYPE, allowed_entity_type

CORPORATE_SUFFIXES = frozenset({
    "inc", "incorporated", "ltd", "limited", "llc", "gmbh", "corp", "corporation", "co",
    "plc",
})
_DROPPED = frozenset("'\u2019\u02bc`")  # apostrophes: joined, not split
_KEPT = frozenset("&#")  # punctuation that is part of a name
_TYPE_ORDER = {t: i for i, t in enumerate(ENTITY_TYPES)}


@dataclass(frozen=True)
class EntityMention:
    """What an extractor reported; `count` lets a resolved entity be resolved again with
    the weight of all the mentions it stands for."""

    name: str
    type: str
    aliases: tuple[str, ...] = ()
    count: int = 1


@dataclass(frozen=True)
class ResolvedEntity:
    key: str
    name: str
    type: str
    aliases: tuple[str, ...]
    mentions: int

    def as_mention(self) -> EntityMention:
        return EntityMention(self.name, self.type, self.aliases, self.mentions)


@dataclass(frozen=True)
class Resolution:
    entities: tuple[ResolvedEntity, ...]  # sorted by key
    key_by_form: dict[str, str]  # normalised name or alias -> entity key
    dropped: int  # mentions whose name normalises to nothing ("Inc.", "!!!")
    remapped_types: int  # mentions whose type was outside the allowlist

    def key_for(self, name: str) -> str | None:
        """The key of the entity a name (as extracted, or an alias) resolved to."""
        return self.key_by_form.get(normalise(name))


def _fixed_point(step, text: str) -> str:
    # Removing characters can let NFKC compose what it could not before; a few passes
    # reach a string the step leaves alone, which makes the function idempotent.
    for _ in range(8):
        again = step(text)
        if again == text:
            return text
        text = again
    return text


def _normalise_once(text: str) -> str:
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    chars = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in _DROPPED or category == "Cf":  # Cf: zero-width joiners and the like
            continue
        if ch in _KEPT or category[0] not in "PZC":
            chars.append(ch)
        else:
            chars.append(" ")
    tokens = unicodedata.normalize("NFKC", "".join(chars)).split()
    while len(tokens) > 1:
        if tokens[0] == "the":
            tokens.pop(0)
        elif tokens[-1] in CORPORATE_SUFFIXES or tokens[-1] == "&":  # "Smith & Co"
            tokens.pop()
        else:
            break
    return " ".join(tokens)


# A document's names recur (each relationship looks up both of its ends), and so do a
# corpus's: normalising was most of the graph step's Python time (bench/graph_step.py).
@functools.lru_cache(maxsize=1 << 16)
def normalise(name: str) -> str:
    """The form names are compared in: "The ACME Corp." -> "acme"."""
    return _fixed_point(_normalise_once, name)


@functools.lru_cache(maxsize=1 << 16)
def clean_spelling(name: str) -> str:
    """A name as shown: NFKC, whitespace collapsed; case and punctuation kept."""
    return _fixed_point(lambda s: " ".join(unicodedata.normalize("NFKC", s).split()), name)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Smaller root wins: not needed for the partition, but keeps runs reproducible.
            self.parent[max(ra, rb)] = min(ra, rb)


def resolve_entities(mentions: Iterable[EntityMention]) -> Resolution:
    records = []  # (name form, spelling, type, alias spellings, alias forms, count)
    dropped = remapped = 0
    # A document repeats its mentions (one per chunk and relationship end): each distinct
    # one is cleaned once, with the count of its repeats.
    counts: Counter[tuple[str, str, tuple[str, ...]]] = Counter()
    for m in mentions:
        counts[m.name, m.type, m.aliases] += m.count
    for (name, given_type, given_aliases), count in counts.items():
        form = normalise(name)
        if not form or count < 1:
            dropped += max(count, 0)
            continue
        kind = allowed_entity_type(given_type)
        if kind is None:
            kind = FALLBACK_ENTITY_TYPE
            remapped += count
        aliases = {a for a in map(clean_spelling, given_aliases) if normalise(a)}
        records.append((form, clean_spelling(name), kind, aliases,
                        {normalise(a) for a in aliases}, count))

    names = _UnionFind()
    for form, *_ in records:
        names.find(form)
    for form, _, _, _, alias_forms, _ in records:
        for alias_form in alias_forms:
            if alias_form in names.parent:  # the alias is some mention's name
                names.union(form, alias_form)

    clusters: dict[str, list] = defaultdict(list)
    for record in records:
        clusters[names.find(record[0])].append(record)

    entities = []
    key_by_form: dict[str, str] = {}
    alias_owners: dict[str, set[str]] = defaultdict(set)
    for members in clusters.values():
        kind, display, seen, total = _cluster_summary(members)
        key = f"{kind}:{normalise(display)}"
        entities.append(ResolvedEntity(key, display, kind, tuple(sorted(seen - {display})),
                                       total))
        for form, _, _, _, alias_forms, _ in members:
            key_by_form[form] = key
            for alias_form in alias_forms:
                alias_owners[alias_form].add(key)
    for alias_form, keys in alias_owners.items():
        if alias_form not in key_by_form and len(keys) == 1:  # ambiguous aliases map nowhere
            key_by_form[alias_form] = next(iter(keys))
    return Resolution(tuple(sorted(entities, key=lambda e: e.key)), key_by_form, dropped,
                      remapped)


def _cluster_summary(members: list[tuple]) -> tuple[str, str, set[str], int]:
    """A cluster's type (most frequent, ties in allowlist order), display name (most
    frequent spelling, ties: smallest), every spelling seen, and its mention count."""
    if len(members) == 1:  # most entities: nothing to vote on
        _, spelling, kind, aliases, _, count = members[0]
        return kind, spelling, aliases | {spelling}, count
    types: Counter[str] = Counter()
    spellings: Counter[str] = Counter()
    seen: set[str] = set()
    for _, spelling, kind, aliases, _, count in members:
        types[kind] += count
        spellings[spelling] += count
        seen |= aliases | {spelling}
    kind = min(types, key=lambda t: (-types[t], _TYPE_ORDER[t]))
    display = min(spellings, key=lambda s: (-spellings[s], s))
    return kind, display, seen, sum(spellings.values())
