"""Tolerant structured outputs: bring a near-miss answer into the schema before validating.

Servers without grammar-constrained decoding (vLLM, Ollama, llama.cpp, proxies) ignore
`enum`, `pattern`, `maxLength` and `maxItems`, and wrap JSON in prose. What has one
sensible reading is fixed here, per field, and counted (the README's table says each rule,
including the guesses: unknown enum values to `other`, scores clamped to their range);
what has none is left for pydantic to reject (and for the engine's one repair turn).

The policy is derived from each pydantic field (Literal members, max_length, pattern,
ge/le); markers in `Annotated[...]` metadata add semantics the type cannot say
(`LanguageCode`, `Citation`, `EnumSynonyms`). Pydantic leaves unknown metadata out of the
JSON schema, so the schema sent to the server is unchanged.
"""

import json
import math
import re
import types
import typing
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from resources.llm.languages import language_code

UNWRAPPED = "json_unwrapped"  # the counter for JSON found inside prose or a code fence
FALLBACK_MEMBER = "other"  # an enum with this member takes it for an unknown answer


class _Marker:
    def __repr__(self) -> str:
        return type(self).__name__


class _LanguageCode(_Marker):
    """An ISO 639-1 code: names, regions and case are folded (`English`, `en-US` -> `en`);
    a language the data does not know becomes `und`."""


class _Citation(_Marker):
    """A reference to a passage or chunk: `[3]`, `#3`, `passage 3`, `chunk: ab12` -> the
    bare token."""


LanguageCode = _LanguageCode()
Citation = _Citation()


@dataclass(frozen=True)
class EnumSynonyms:
    """Known synonyms of an enum's members (lowercase words -> member)."""

    mapping: dict[str, str] = field(default_factory=dict)


def unwrap_json(text: str) -> tuple[object, bool]:
    """The answer's JSON value, and whether it had to be dug out of prose or a fence (the
    first balanced top-level object). ValueError if there is none."""
    stripped = text.strip()
    try:
        return json.loads(stripped), False
    except ValueError:
        pass
    for start in (m.start() for m in re.finditer(r"\{", stripped)):
        end = _balanced_end(stripped, start)
        if end is None:
            continue
        try:
            return json.loads(stripped[start:end]), True
        except ValueError:
            continue
    raise ValueError("the answer contains no JSON object")


def _balanced_end(text: str, start: int) -> int | None:
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def normalise(data: object, model: type[BaseModel]) -> tuple[object, Counter[str]]:
    """`data` (decoded JSON) brought as close to `model` as can be done safely, and how
    many values were changed per field (`Model.field`)."""
    counts: Counter[str] = Counter()
    return _model(data, model, counts), counts


def _model(data: object, model: type[BaseModel], counts: Counter[str]) -> object:
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in out:
            out[key] = _value(out[key], info.annotation, list(info.metadata),
                              f"{model.__name__}.{name}", counts)
    return out


def _value(value: object, annotation: object, metadata: list, where: str,
           counts: Counter[str]) -> object:
    annotation, metadata = _unannotate(annotation, metadata)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or len(arms) != 1:
            return value  # several real arms: which one was meant is a guess
        return _value(value, arms[0], metadata, where, counts)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model(value, annotation, counts)
    if origin is list and isinstance(value, list):
        limit = _constraint(metadata, "max_length")
        if limit is not None and len(value) > limit:
            value = value[:limit]
            counts[where] += 1
        (item_type,) = typing.get_args(annotation) or (object,)
        return [_value(v, item_type, [], where, counts) for v in value]
    new = _scalar(value, annotation, origin, metadata)
    if type(new) is not type(value) or new != value:
        counts[where] += 1
    return new


def _scalar(value: object, annotation: object, origin: object, metadata: list) -> object:
    if origin is typing.Literal:
        return _enum(value, typing.get_args(annotation), metadata)
    if annotation is str and isinstance(value, str):
        return _string(value, metadata)
    if annotation in (int, float) and not isinstance(value, bool):
        return _number(value, annotation, metadata)
    return value


def _unannotate(annotation: object, metadata: list) -> tuple[object, list]:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata = [*metadata, *extra]
        for item in extra:  # Annotated[str, Field(...)]: the field's own constraints
            if isinstance(item, FieldInfo):
                metadata.extend(item.metadata)
    return annotation, metadata


def _constraint(metadata: list, name: str):
    for item in metadata:
        value = getattr(item, name, None)
        if value is not None and not isinstance(item, FieldInfo):
            return value
    return None


# -- enums -------------------------------------------------------------------------------
def fold(text: str) -> str:
    """Lowercase ASCII words joined by `_`: `API-Integration ` -> `api_integration`."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "_".join(re.findall(r"[a-z0-9]+", text.lower()))


def _enum(value: object, members: tuple, metadata: list) -> object:
    if not isinstance(value, str) or value in members:
        return value
    synonyms = next((m.mapping for m in metadata if isinstance(m, EnumSynonyms)), {})
    folded = fold(value)
    words = folded.split("_")
    for member in members:
        expected = fold(str(member)).split("_")
        if len(words) == len(expected) and all(
                w in (e, f"{e}s", f"{e}es") for w, e in zip(words, expected, strict=True)):
            return member  # case, spacing, hyphens, plurals
        if folded.replace("_", "") == "".join(expected):
            return member  # "DataExport", "dataexport"
    for candidate in (folded, _singular(folded)):
        if candidate in synonyms:
            return synonyms[candidate]
    return FALLBACK_MEMBER if FALLBACK_MEMBER in members else value


def _singular(folded: str) -> str:
    return "_".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                    for w in folded.split("_"))


# -- strings -------------------------------------------------------------------------------
def _string(value: str, metadata: list) -> str:
    if any(isinstance(m, _LanguageCode) for m in metadata):
        value = language_code(value)
    if any(isinstance(m, _Citation) for m in metadata):
        value = citation(value)
    pattern = _constraint(metadata, "pattern")
    if pattern and not re.search(pattern, value):
        value = next((c for c in _spellings(value) if re.search(pattern, c)), value)
    limit = _constraint(metadata, "max_length")
    if limit is not None and len(value) > limit:
        value = cut(value, limit)
        if pattern and not re.search(pattern, value):
            value = value.rstrip("_-")
    return value


def _spellings(value: str) -> list[str]:
    """Other spellings a pattern may want: trimmed, lowercased, snake_case, kebab-case."""
    stripped = value.strip()
    snake = fold(stripped)
    return [stripped, stripped.lower(), snake, snake.replace("_", "-")]


def cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at a word boundary when there is one in
    the second half."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    boundary = max(head.rfind(" "), head.rfind("_"), head.rfind("-"))
    if boundary < limit // 2:
        return text[:limit].rstrip()
    return text[:boundary].rstrip(" _-,;:")


_CITATION = re.compile(
    r"^[\s\[\(#]*(?:(?:passage|chunk|source|ref|id|p)\b[\s:#.\-]*)?#?([\w-]+?)[\s\]\).,]*$",
    re.I)


def citation(text: str) -> str:
    match = _CITATION.match(text)
    return match.group(1) if match else text.strip()


# -- numbers -------------------------------------------------------------------------------
def _number(value: object, kind: type, metadata: list) -> object:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return value
    if not isinstance(value, int | float) or not math.isfinite(value):  # NaN, inf: pydantic
        return value
    if kind is int:
        value = math.floor(value + 0.5)  # halves up: round() would take 2.5 to 2, 3.5 to 4
    for name, bound in (("ge", max), ("le", min)):
        limit = _constraint(metadata, name)
        if limit is not None:
            value = bound(value, limit)
    limit = _constraint(metadata, "gt")
    return kind(value) if limit is None or value > limit else value


__all__ = ["Citation", "EnumSynonyms", "LanguageCode", "UNWRAPPED", "citation", "cut", "fold",
           "normalise", "unwrap_json"]
