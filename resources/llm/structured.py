"""Structured outputs: the schema sent, how an answer is parsed, and the repair turn."""

import functools
import json
import re
from collections import Counter

from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, ValidationError

from resources.llm.normalise import UNWRAPPED, normalise, unwrap_json

# When a server takes no json_schema, the schema travels in a system message between these
# markers; the offline provider reads it back from there (schema_in_messages).
SCHEMA_BEGIN = "<json_schema>"
SCHEMA_END = "</json_schema>"
SCHEMA_PROMPT = (
    "Answer with only one JSON object, no prose and no code fence, that follows this JSON "
    "schema exactly (every property, the enum values and patterns as written):\n"
    f"{SCHEMA_BEGIN}{{schema}}{SCHEMA_END}"
)

REPAIR_PROMPT = (
    "Your previous answer was not valid: {error}\n"
    "Answer again with only a JSON object that matches the requested schema."
)


@functools.cache
def json_schema(model: type[BaseModel]) -> dict:
    """The schema in OpenAI's strict form (every property required, optional ones
    nullable, no extra properties), as the SDK's own structured-output helper builds it;
    a plain pydantic schema is rejected with strict=True."""
    return to_strict_json_schema(model)


def response_format(model: type[BaseModel]) -> dict:
    return {"type": "json_schema",
            "json_schema": {"name": model.__name__, "schema": json_schema(model), "strict": True}}


def answer_text(reply) -> str | None:
    return reply.choices[0].message.content if reply.choices else None


def schema_message(model: type[BaseModel]) -> dict:
    """The system message that carries the schema when response_format cannot."""
    schema = json.dumps(json_schema(model), separators=(",", ":"), ensure_ascii=False)
    return {"role": "system", "content": SCHEMA_PROMPT.format(schema=schema)}


def schema_in_messages(messages: list[dict]) -> dict | None:
    """The JSON schema a request carries in a message between the markers, if any."""
    pattern = re.compile(re.escape(SCHEMA_BEGIN) + r"(.*?)" + re.escape(SCHEMA_END), re.S)
    for message in messages:
        found = pattern.search(str(message.get("content") or ""))
        if found:
            try:
                schema = json.loads(found.group(1))
            except ValueError:
                continue
            if isinstance(schema, dict):
                return schema
    return None


def parse(content: str | None, schema: type[BaseModel] | None
          ) -> tuple[object, Counter[str]]:
    """The answer as text, or validated against `schema`, and what had to be normalised
    to get there (per field); ValueError if unusable even after normalising."""
    if not content or not content.strip():
        raise ValueError("the answer was empty")
    if schema is None:
        return content, Counter()
    # Always normalised, valid-looking or not: a citation written "[3]" is a valid string
    # and still not the passage number the field holds.
    data, unwrapped = unwrap_json(content)
    data, counts = normalise(data, schema)
    if unwrapped:
        counts[UNWRAPPED] += 1
    return schema.model_validate(data), counts


def repair_turn(content: str | None, error: BaseException) -> list[dict]:
    """The two messages that show the model its own mistake."""
    return [{"role": "assistant", "content": content or ""},
            {"role": "user", "content": REPAIR_PROMPT.format(error=short(error))}]


def short(error: BaseException, limit: int = 300) -> str:
    text = str(error).replace("\n", " ")
    if isinstance(error, ValidationError):
        text = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors()
        )
    return text[:limit]
