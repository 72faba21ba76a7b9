"""Deterministic text analytics: what the offline provider answers with.

Heuristics, not a language model: keyword frequencies, extractive summaries,
capitalised-phrase entities typed by simple cues, co-occurrence relations, theme
signatures from keywords, hashed n-gram embeddings. Same input, same output, always.
"""

import hashlib
import math
import re
from collections import Counter
from functools import cache

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself
yourselves us per via still even may might must shall get got one two three new also
yes okay ok hi hello thanks thank please let lets i'm we're it's that's don't can't
""".split())

LANGUAGE_MARKERS = {
    "en": {"the", "and", "is", "of", "to", "in", "that", "it", "with", "for"},
    "de": {"der", "die", "und", "ist", "nicht", "das", "mit", "ein", "zu", "auf"},
    "fr": {"le", "la", "et", "est", "les", "des", "une", "pour", "dans", "pas"},
    "es": {"el", "la", "y", "es", "los", "las", "una", "para", "por", "con"},
}

_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][A-Za-zÀ-ÖØ-öø-ÿ0-9'’\-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-ZÀ-Ö0-9])")
_CAPITALISED = re.compile(
    r"\b[A-ZÀ-Ö][\w’'&.\-]*(?:\s+(?:of|de|van|von|the|&|and)?\s*[A-ZÀ-Ö][\w’'&.\-]*)*"
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")

ORG_CUES = ("inc", "ltd", "llc", "gmbh", "corp", "corporation", "company", "co", "traders",
            "logistics", "dental", "labs", "bank", "group", "partners", "university", "team",
            "support", "aws", "okta", "stripe", "engineering", "operations")
PRODUCT_CUES = ("api", "app", "mobile", "sdk", "ledger", "sync", "plugin", "platform",
                "reconciliation", "dashboard", "cloud", "suite")
EVENT_CUES = ("incident", "outage", "review", "conference", "launch", "release", "summit",
              "postmortem", "meeting", "webinar")
LOCATION_CUES = ("city", "street", "office", "region", "county", "us-east-1", "dublin",
                 "austin", "london", "berlin", "paris", "rotterdam", "memphis", "europe")
PLACE_PREPOSITIONS = ("in", "at", "from", "near")


def words(text: str) -> list[str]:
    return [w.lower().strip("'’-") for w in _WORD.findall(text)]


def sentences(text: str) -> list[str]:
    """Sentences, also ending at line breaks (headings and transcript lines have no dot)."""
    found = []
    for line in text.splitlines():
        found.extend(s.strip() for s in _SENTENCE_END.split(" ".join(line.split())))
    return [s for s in found if s]


def keywords(text: str, k: int = 8) -> list[str]:
    """The most frequent content words (ties by first appearance)."""
    tokens = [w for w in words(text) if w not in STOPWORDS and len(w) > 2 and not w.isdigit()]
    counts = Counter(tokens)
    first = {}
    for i, w in enumerate(tokens):
        first.setdefault(w, i)
    return sorted(counts, key=lambda w: (-counts[w], first[w]))[:k]


def summary(text: str, max_sentences: int = 2, max_chars: int = 400) -> str:
    """The sentences that carry the most keyword weight, in document order."""
    found = sentences(text)
    if not found:
        return text[:max_chars]
    weights = {w: i for i, w in enumerate(reversed(keywords(text, 12)), start=1)}
    scored = sorted(
        range(len(found)),
        key=lambda i: (-sum(weights.get(w, 0) for w in set(words(found[i]))), i),
    )
    chosen = sorted(scored[:max_sentences])
    return " ".join(found[i] for i in chosen)[:max_chars]


def title(text: str, max_words: int = 10) -> str:
    first = sentences(text)[0] if sentences(text) else text
    first = first.lstrip("#").strip()
    return " ".join(first.split()[:max_words]).rstrip(".,;:") or "Untitled"


def language(text: str) -> str:
    tokens = Counter(words(text))
    scores = {lang: sum(tokens[w] for w in marks) for lang, marks in LANGUAGE_MARKERS.items()}
    best = max(scores, key=lambda lang: (scores[lang], lang == "en"))
    return best if scores[best] else "en"


def has_personal_data(text: str) -> bool:
    return bool(_EMAIL.search(text) or _PHONE.search(text))


def entity_type(name: str, context: str = "") -> str:
    lowered = name.lower()
    parts = lowered.replace("-", " ").split()
    if any(cue in parts for cue in ORG_CUES):
        return "Organization"
    if any(cue in parts for cue in PRODUCT_CUES) or re.search(r"\d+\.\d+", name):
        return "Product"
    if any(cue in parts for cue in EVENT_CUES) or re.match(r"inc-\d", lowered):
        return "Event"
    if any(cue in lowered for cue in LOCATION_CUES):
        return "Location"
    tokens = name.split()
    if 2 <= len(tokens) <= 3 and all(t[:1].isupper() and t.isalpha() for t in tokens):
        return "Person"  # before the preposition rule: "a call from Priya Raman"
    if re.search(rf"\b(?:{'|'.join(PLACE_PREPOSITIONS)})\s+{re.escape(name)}", context):
        return "Location"
    return "Concept"


CALENDAR_WORDS = frozenset("""
january february march april may june july august september october november december
monday tuesday wednesday thursday friday saturday sunday
""".split())


def entities(text: str, limit: int = 20) -> list[tuple[str, str]]:
    """(name, type) of capitalised phrases, most mentioned first. Not names: stopwords,
    calendar words, field labels ("Status:"), and single words seen only where any word is
    capitalised (the start of a sentence, line or list item: "Many", "Root")."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for match in _CAPITALISED.finditer(text):
        if text[match.end() : match.end() + 1] == ":":
            continue
        before = text[max(0, match.start() - 20) : match.start()].rstrip(" \t*#>-")
        initial = not before or before[-1] in ".!?:|\n" or before[-1].isdigit()
        phrase = re.split(r"[.!?]\s", match.group(0))[0]
        for part in re.split(r"\s+and\s+", phrase):  # "Marcus Feld and Sofia Marchetti"
            tokens = part.strip(" .&-’'").split()
            if len(tokens) == 1 and initial:
                continue
            initial = False  # only the phrase's first part starts the sentence
            while tokens and tokens[0].lower() in STOPWORDS:
                tokens = tokens[1:]
            name = " ".join(tokens)
            single = len(tokens) == 1
            if (len(name) < 2 or name.lower() in STOPWORDS or name.lower() in CALENDAR_WORDS
                    or single and (any(c.isdigit() for c in name) or "'" in name
                                   or "’" in name)):
                continue
            counts[name] += 1
            first.setdefault(name, match.start())
    # "Priya" after "Priya Raman" is the same person, not another entity.
    parts = {p for n in counts if " " in n for p in n.split()}
    names = [n for n in counts if " " in n or n not in parts]
    ranked = sorted(names, key=lambda n: (-counts[n], first[n]))[:limit]
    return [(name, entity_type(name, text)) for name in ranked]


def cooccurrences(text: str, names: list[str], limit: int = 20) -> list[tuple[str, str, str]]:
    """(source, target, evidence sentence) for entity pairs named in one sentence."""
    pairs: dict[tuple[str, str], str] = {}
    for sentence in sentences(text):
        present = [n for n in names if n in sentence]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                pairs.setdefault((a, b), sentence)
    return [(a, b, s) for (a, b), s in list(pairs.items())[:limit]]


# Words too general to name a theme on their own.
GENERIC_WORDS = frozenset("""
customer customers team teams issue issues problem problems week weeks day days time times
today yesterday thing things way lot lots people user users case cases
""".split())


def key_phrases(text: str, k: int = 5, min_count: int = 2) -> list[tuple[str, str]]:
    """The most frequent pairs of adjacent lowercase content words ("charged twice",
    "idempotency key"): topics rather than names, which are capitalised, and only words
    with just a space between them (not the two halves of an email or a URL)."""
    matches = list(_WORD.finditer(text))
    counts: Counter[tuple[str, str]] = Counter()
    for left, right in zip(matches, matches[1:], strict=False):
        a, b = left.group(0), right.group(0)
        if (text[left.end() : right.start()] == " " and a.islower() and b.islower()
                and all(len(w) > 2 and w.replace("-", "").isalpha() and w not in STOPWORDS
                        and w not in GENERIC_WORDS for w in (a, b))):
            counts[(a, b)] += 1
    ranked = sorted(counts, key=lambda pair: -counts[pair])  # stable: first seen wins ties
    return [pair for pair in ranked if counts[pair] >= min_count][:k]


def signature(terms: list[str]) -> str:
    """snake_case theme signature from keywords, e.g. ['billing', 'double'] -> billing_double."""
    cleaned = [re.sub(r"[^a-z0-9]+", "_", t.lower()).strip("_") for t in terms]
    return "_".join(t for t in cleaned if t)[:60] or "general"


@cache
def _slot(gram: str, dims: int) -> tuple[int, float]:
    digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dims, 1.0 if (value >> 32) & 1 else -1.0


def embed(text: str, dims: int = 256) -> list[float]:
    """Hashed word and character-trigram features, L2-normalised: similar wording, close
    vectors; identical text, identical vector."""
    vector = [0.0] * dims
    tokens = words(text)
    grams = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
    for token in tokens:
        padded = f" {token} "
        grams.extend(padded[i : i + 3] for i in range(len(padded) - 2))
    for gram in grams:
        index, sign = _slot(gram, dims)
        vector[index] += sign
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]
