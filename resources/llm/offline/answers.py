"""Shaping the analytics into whatever JSON schema a request asks for.

Fields are filled by what their names say (title, summary, keywords, entities,
relationships, themes, category, language, …) and by their types and enums, so the
pipeline's own pydantic models get sensible, schema-valid answers.
"""

import hashlib
import re
import uuid

from resources.llm.offline import analytics as ta
from resources.llm.structured import REPAIR_PROMPT

# What starts a passage: a `[chunk:ID]` marker, a `chunk_id: ID`, or a passage number
# `[N]` alone on its line (how the theme prompt numbers a document's chunks).
_PASSAGE = re.compile(
    r"\[chunk[:\s]+(?P<id>[0-9a-f]{8,})\]|chunk_id[\"':=\s]+(?P<key>[0-9a-f]{8,})"
    r"|^\[(?P<number>\d{1,6})\][ \t]*$", re.I | re.M)
_REPAIR = re.compile(
    "".join(re.escape(part) if part != "{error}" else ".*"
            for part in re.split(r"(\{error\})", REPAIR_PROMPT)), re.S)
_RELATION_CUES = {
    "WORKS_FOR": ("works for", "works at", "joined", "employee", "lead at", "engineer at"),
    "USES": ("uses", "using", "integrat", "relies on", "customer of", "subscribes"),
    "REPORTED": ("reported", "raised", "opened", "filed", "escalated"),
    "FIXED": ("fixed", "resolved", "patched", "rolled back", "mitigated"),
    "LOCATED_IN": (" in ", " based in", " office"),
    "PART_OF": ("part of", "member of", "team", "belongs"),
}


def _tagged(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    return match.group(1).strip() if match else None


def original_request(messages: list[dict]) -> list[dict]:
    """The messages without the repair turns the engine appended (our answer, then our
    REPAIR_PROMPT): a repaired request is answered as the original one would be, as a
    model given the same document and schema would, so one malformed answer cannot change
    what a run stores."""
    messages = list(messages)
    while (len(messages) >= 3 and messages[-2].get("role") == "assistant"
           and messages[-1].get("role") == "user"
           and _REPAIR.fullmatch(str(messages[-1].get("content") or ""))):
        messages = messages[:-2]
    return messages


def passages(text: str) -> tuple[str, dict[str, str]]:
    """The text without its passage markers, and {what cites a passage: its text}: the
    id of a `[chunk:ID]` passage, the number (as a string) of an `[N]` passage."""
    found, plain, start, label = {}, [], 0, None
    for match in _PASSAGE.finditer(text):
        plain.append(text[start:match.start()])
        if label is not None:
            found[label] = text[start:match.start()].strip()
        label, start = next(g for g in match.groups() if g), match.end()
    plain.append(text[start:])
    if label is not None:
        found[label] = text[start:].strip()
    return "".join(plain), found


def request_parts(messages: list[dict]) -> tuple[str, str]:
    """What a request is about: the text inside <document> tags if present, else the first
    user message of the original request (without repair turns), and what is to be
    judged against it, inside <theme> tags ("" if none)."""
    users = [str(m.get("content") or "") for m in original_request(messages)
             if m.get("role") == "user"]
    first = users[0] if users else ""
    document = _tagged(first, "document")
    return (first if document is None else document), _tagged(first, "theme") or ""



def resolve_schema(schema: dict, defs: dict) -> dict:
    """A JSON schema node with `$ref`s followed and a nullable `anyOf`/`oneOf` reduced to
    its non-null option."""
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [resolve_schema(s, defs) for s in schema[key]]
            return next((s for s in options if s.get("type") != "null"), options[0])
    return schema

class Answerer:
    def __init__(self, text: str, root_schema: dict, subject: str = "", analytics=ta):
        self.ta = analytics  # the module, or the simulator's memo of it (simulator/memo.py)
        # passage markers are how the prompt cites, not what the document says
        text, cited = passages(text)
        self.text = text
        self.subject = subject
        self.defs = root_schema.get("$defs", {})
        self.keywords = self.ta.keywords(text, 12)
        self.entities = self.ta.entities(text)
        self.citations = list(cited)  # what cites each passage (id or number), in order
        self.passages = {label: body.lower() for label, body in cited.items()}

    # -- schema walking -------------------------------------------------------------------
    def _resolve(self, schema: dict) -> dict:
        return resolve_schema(schema, self.defs)

    def fill(self, schema: dict, name: str = "", context: dict | None = None) -> object:
        schema = self._resolve(schema)
        context = context or {}
        if name in context:
            return self._coerce(context[name], schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._choose(schema["enum"], context.get("_hint", ""))
        kind = schema.get("type")
        if kind == "object":
            return {
                prop: self.fill(sub, prop, context)
                for prop, sub in schema.get("properties", {}).items()
            }
        if kind == "array":
            return self._array(name, schema)
        if kind == "string":
            return self._string(name, schema, context)
        if kind in ("integer", "number"):
            return self._number(name, schema, kind)
        if kind == "boolean":
            return self.ta.has_personal_data(self.text) if _has(name, "personal", "pii") else False
        return None

    def _coerce(self, value: object, schema: dict) -> object:
        if "enum" in schema:
            return self._choose(schema["enum"], str(value))
        if schema.get("type") == "array" and not isinstance(value, list):
            return [value]
        if isinstance(value, str) and "maxLength" in schema:
            return value[: schema["maxLength"]]
        return value

    def _choose(self, options: list, hint: str) -> object:
        """The enum value that matches the hint exactly, else the one whose words the
        text mentions most; ties go to the first option."""
        for option in options:
            if str(option).lower() == hint.lower():
                return option
        text_words = self.ta.words(self.text)

        def score(option: object) -> int:
            parts = [p for p in re.split(r"[_\W]+", str(option).lower()) if p]
            return sum(text_words.count(p) for p in parts)

        return max(options, key=lambda o: (score(o), -options.index(o)))

    # -- arrays ---------------------------------------------------------------------------
    def _array(self, name: str, schema: dict) -> list:
        items = self._resolve(schema.get("items", {}))
        low, high = schema.get("minItems", 0), schema.get("maxItems", 20)
        props = set(items.get("properties", {}))
        if items.get("type") == "object":
            if {"source", "target"} <= props:
                contexts = self._relations(items)
            elif "signature" in props or "label" in props:
                contexts = self._themes()
            elif "name" in props:
                contexts = [{"name": n, "type": t, "_hint": t, "aliases": []}
                            for n, t in self.entities]
            else:
                contexts = [{}]
            values = [self.fill(items, name, c) for c in contexts[:high]]
        elif _has(name, "chunk", "evidence"):
            values = self.citations[:high]
        elif _has(name, "alias"):
            values = []
        elif items.get("type") == "string" and not items.get("format") and "enum" not in items:
            values = [self._coerce(k, items) for k in self.keywords[: min(high, 8)]]
        else:  # numbers, enums, dates, ...: filled by their own type
            values = [self.fill(items, name, {}) for _ in range(min(high, max(low, 1)))]
        while len(values) < low:
            values.append(self.fill(items, name, {}))
        return values

    def _relations(self, items: dict) -> list[dict]:
        type_schema = self._resolve(items["properties"].get("type", {}))
        # a free-text type still gets one of the usual relation types
        options = type_schema.get("enum") or [*_RELATION_CUES, "RELATED_TO"]
        names = [n for n, _ in self.entities]
        relations = []
        for source, target, sentence in self.ta.cooccurrences(self.text, names):
            hint = next((label for label, cues in _RELATION_CUES.items()
                         if label in options and any(c in sentence.lower() for c in cues)),
                        "RELATED_TO")
            evidence = self.citations[0] if self.citations else sentence
            relations.append({"source": source, "target": target, "type": hint, "_hint": hint,
                              "evidence": evidence, "evidence_chunk_id": evidence,
                              "description": sentence})
        return relations

    def _themes(self) -> list[dict]:
        """Recurring two-word phrases, else pairs of keywords; the passages that mention a
        theme's words are its evidence, cited as the prompt marks them (number or id)."""
        pairs = [list(p) for p in self.ta.key_phrases(self.text)] or [
            self.keywords[i : i + 2] for i in range(0, min(len(self.keywords), 6), 2)]
        themes = []
        for terms in pairs:
            evidence = [label for label, body in self.passages.items()
                        if all(t in body for t in terms)]
            themes.append({
                "signature": self.ta.signature(terms),
                "label": " ".join(terms).capitalize(),
                "description": self._sentence_with(terms) or self.ta.summary(self.text, 1),
                "evidence": (evidence or self.citations)[:3],
            })
        return themes or [{"signature": "general", "label": "General"}]

    def _sentence_with(self, terms: list[str]) -> str:
        for sentence in self.ta.sentences(self.text):
            if all(t in sentence.lower() for t in terms):
                return sentence
        return ""

    # -- scalars --------------------------------------------------------------------------
    def _string(self, name: str, schema: dict, context: dict) -> str:
        formatted = self._formatted(schema.get("format"))
        if formatted is not None:
            return formatted
        if _has(name, "title", "headline"):
            value = self.ta.title(self.text)
        elif _has(name, "summary", "description", "abstract", "explanation", "reason"):
            value = self.ta.summary(self.text)
        elif _has(name, "language", "lang"):
            value = self.ta.language(self.text)
        elif _has(name, "signature", "slug"):
            value = self.ta.signature(self.keywords[:2])
        elif _has(name, "label", "name", "topic"):
            value = " ".join(k.capitalize() for k in self.keywords[:2]) or "General"
        else:
            value = self.ta.summary(self.text, 1)
        while len(value) < schema.get("minLength", 0):
            value = f"{value} {value}" if value else "n/a"
        limit = schema.get("maxLength")
        return value[:limit] if limit else value

    def _formatted(self, fmt: str | None) -> str | None:
        """Strings with a format: the first one the text contains, else a fixed one."""
        if fmt in ("date", "date-time"):
            found = re.search(r"\b(\d{4}-\d{2}-\d{2})\b", self.text)
            day = found.group(1) if found else "1970-01-01"
            return day if fmt == "date" else f"{day}T00:00:00Z"
        if fmt == "email":
            found = re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", self.text)
            return found.group(0) if found else "unknown@example.com"
        if fmt == "uuid":
            digest = hashlib.sha256(self.text.encode()).hexdigest()
            return str(uuid.UUID(digest[:32]))
        if fmt in ("uri", "url"):
            found = re.search(r"https?://\S+", self.text)
            return found.group(0).rstrip(".,)") if found else "https://example.com/"
        return None

    def _number(self, name: str, schema: dict, kind: str) -> float | int:
        if self.subject and _has(name, "score", "rating"):
            return self._judgement(schema, kind)
        step = 1 if kind == "integer" else 1e-3
        low = schema.get("minimum", schema.get("exclusiveMinimum", -step) + step)
        high = schema.get("maximum", schema.get("exclusiveMaximum", float("inf")) - step)
        if high == float("inf") or high < low:
            high = low + (1 if kind == "number" else 5)
        # Denser, more repetitive text scores higher: crude, but deterministic.
        words = self.ta.words(self.text)
        density = (sum(words.count(k) for k in self.keywords[:4]) / len(words)) if words else 0
        value = low + (high - low) * min(1.0, density * 8)
        return round(value) if kind == "integer" else round(value, 3)


    def _judgement(self, schema: dict, kind: str) -> float | int:
        """A score for how much of the judged subject's wording the text contains: the
        share of the subject's words of its first line found in the text, on the scale."""
        low, high = schema.get("minimum", 0), schema.get("maximum", 1)
        first_line = self.subject.splitlines()[0] if self.subject else ""
        terms = {w for w in self.ta.words(first_line.replace("_", " "))
                 if w not in self.ta.STOPWORDS and len(w) > 2 and w != "signature"}
        text_words = set(self.ta.words(self.text))
        share = len(terms & text_words) / len(terms) if terms else 0.0
        value = low + (high - low) * share
        return round(value) if kind == "integer" else round(value, 3)


def _has(name: str, *parts: str) -> bool:
    lowered = name.lower()
    return any(p in lowered for p in parts)


def answer(schema: dict, messages: list[dict], analytics=ta) -> object:
    text, subject = request_parts(messages)
    return Answerer(text, schema, subject, analytics).fill(schema)
