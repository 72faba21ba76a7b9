"""A loose model: answers that follow the JSON schema's shape but not its finer rules.

Servers without grammar-constrained decoding ignore `enum`, `pattern`, `maxLength` and
`maxItems`, write language names where codes were asked, reformat citations and wrap
the JSON in prose. `loosen` does that to a schema-valid answer, driven only by the
request's JSON schema (types, enum, pattern, maxLength, maxItems, property names), at
the rates the simulator is configured with, and counts what it did.
"""

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass

import pycountry
from pydantic import BaseModel, Field, model_validator

from resources.llm.offline.answers import resolve_schema
from resources.llm.structured import schema_in_messages

# What each knob does (SimConfig fields of the same names, rates in [0, 1]).
KNOBS = {
    "loose_enum": "an enum value written as a near-miss, a synonym or an unknown word",
    "loose_names": "a language name or region where an ISO 639-1 code is asked",
    "loose_length": "strings past maxLength, lists past maxItems",
    "loose_pattern": "a patterned string (snake_case signature) in words",
    "loose_citations": "evidence* entries as [3], passage 3, #3, reordered",
    "loose_wrap": "the JSON inside prose or a ```json code fence",
}
_SYNONYMS = {  # what a model says instead of an enum value, when it knows a synonym
    "billing": "payments", "authentication": "auth", "data_export": "exports",
    "api_integration": "API", "mobile_app": "mobile", "pricing": "price",
    "security": "vulnerability", "incident": "outage", "product_update": "release notes",
    "customer_success": "customer story",
}
_UNKNOWN = ("miscellaneous", "general", "n/a", "misc")
_REGIONS = {"en": ("US", "GB"), "fr": ("FR", "CA"), "de": ("DE", "AT"), "es": ("ES", "MX"),
            "pt": ("BR", "PT"), "it": ("IT",), "nl": ("NL", "BE")}
_FILLER = " and, to say it once more, in further detail"
_PROSE = ("Sure! Here is the JSON you asked for:\n\n", "\n\nLet me know if you need more.")


@dataclass(frozen=True)
class Rates:
    enum: float = 0.0
    names: float = 0.0
    length: float = 0.0
    pattern: float = 0.0
    citations: float = 0.0
    wrap: float = 0.0

    @property
    def any(self) -> bool:
        return any((self.enum, self.names, self.length, self.pattern, self.citations,
                    self.wrap))


_RATE = Field(0.0, ge=0, le=1)


class LooseConfig(BaseModel):
    """The simulator's loose-model and no-structured-output knobs (SimConfig has them)."""

    # `loose` sets every loose_* rate that is not given itself: SimConfig(loose=0.3)
    loose: float | None = Field(None, ge=0, le=1)
    loose_enum: float = _RATE
    loose_names: float = _RATE
    loose_length: float = _RATE
    loose_pattern: float = _RATE
    loose_citations: float = _RATE
    loose_wrap: float = _RATE
    # A server without structured outputs: HTTP 400 to these response_format types.
    reject_json_schema: bool = False
    reject_json_object: bool = False

    @model_validator(mode="before")
    @classmethod
    def _loose_sets_every_rate(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("loose") is not None:
            data = {**{knob: data["loose"] for knob in KNOBS}, **data}
        return data

    def rates(self) -> "Rates":
        return Rates(self.loose_enum, self.loose_names, self.loose_length, self.loose_pattern,
                     self.loose_citations, self.loose_wrap)


def loosen_answer(config: LooseConfig, payload: dict, body: bytes, answer: dict,
                  counts: Counter[str]) -> None:
    """Take a loose model's liberties with a chat completion `answer` to `payload`, seeded
    by the request itself so that the same request gets the same answer whatever the order
    of arrival. The schema is the request's json_schema, else the one in its messages."""
    rates = config.rates()
    if not rates.any:
        return
    response_format = payload.get("response_format") or {}
    schema = response_format.get("json_schema", {}).get("schema") \
        if response_format.get("type") == "json_schema" \
        else schema_in_messages(payload.get("messages") or [])
    if not isinstance(schema, dict):
        return
    seed = getattr(config, "seed", 0)
    rng = random.Random(f"{seed}:{hashlib.sha256(body).hexdigest()}")
    message = answer["choices"][0]["message"]
    message["content"] = loosen(message["content"], schema, rates, rng, counts)


def loosen(content: str, schema: dict, rates: Rates, rng: random.Random,
           counts: Counter[str]) -> str:
    """`content` (a JSON answer to `schema`) with the configured liberties taken."""
    try:
        value = json.loads(content)
    except ValueError:
        return content
    value = _Walker(schema, rates, rng, counts).walk(value, schema, "")
    text = json.dumps(value, ensure_ascii=False)
    if rng.random() < rates.wrap:
        counts["wrap"] += 1
        text = (f"{_PROSE[0]}```json\n{text}\n```{_PROSE[1]}" if rng.random() < 0.5
                else f"{_PROSE[0]}{text}{_PROSE[1]}")
    return text


class _Walker:
    def __init__(self, root: dict, rates: Rates, rng: random.Random, counts: Counter[str]):
        self.defs = root.get("$defs", {})
        self.rates, self.rng, self.counts = rates, rng, counts

    def _resolve(self, schema: dict) -> dict:
        return resolve_schema(schema, self.defs)

    def _draw(self, knob: str) -> bool:
        if self.rng.random() < getattr(self.rates, knob):
            self.counts[knob] += 1
            return True
        return False

    def walk(self, value: object, schema: dict, name: str) -> object:
        schema = self._resolve(schema)
        if isinstance(value, dict):
            props = schema.get("properties", {})
            return {k: self.walk(v, props.get(k, {}), k) for k, v in value.items()}
        if isinstance(value, list):
            return self._array(value, schema, name)
        if isinstance(value, str):
            return self._string(value, schema, name)
        return value

    def _array(self, value: list, schema: dict, name: str) -> list:
        items = [self.walk(v, schema.get("items", {}), name) for v in value]
        if (name.lower().startswith("evidence") and items
                and all(isinstance(v, str) for v in items) and self._draw("citations")):
            items = [self.rng.choice((f"[{v}]", f"passage {v}", f"#{v}", v)) for v in items]
            self.rng.shuffle(items)
        limit = schema.get("maxItems")
        if limit is not None and items and self._draw("length"):
            items = [items[i % len(items)] for i in range(limit + self.rng.randint(1, 3))]
        return items

    def _string(self, value: str, schema: dict, name: str) -> str:
        if "enum" in schema:
            return self._enum(value) if self._draw("enum") else value
        if "lang" in name.lower() and schema.get("pattern"):
            return self._language(value) if self._draw("names") else value
        if schema.get("pattern") and self._draw("pattern"):
            words = value.replace("-", "_").split("_")
            value = (" ".join(w.capitalize() for w in words) if self.rng.random() < 0.5
                     else "-".join(words))
        limit = schema.get("maxLength")
        if limit is not None and self._draw("length"):
            value = value or "text"
            while len(value) <= limit:
                value += _FILLER
        return value

    def _enum(self, value: str) -> str:
        words = value.split("_")
        choices = [" ".join(w.capitalize() for w in words), value.upper().replace("_", " "),
                   "-".join(words), value.capitalize(), f"{value}s",
                   _SYNONYMS.get(value, value), self.rng.choice(_UNKNOWN)]
        return self.rng.choice(choices)

    def _language(self, code: str) -> str:
        lang = pycountry.languages.get(alpha_2=code)
        name = lang.name if lang else code
        region = self.rng.choice(_REGIONS.get(code, (code.upper(),)))
        return self.rng.choice((name, name.lower(), code.upper(), f"{code}-{region}",
                                f"{code}_{region}"))
