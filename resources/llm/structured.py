"""Structured outputs: the schema sent, how an answer is parsed, and the repair turn."""

import functools

from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, ValidationError

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


def parse(content: str | None, schema: type[BaseModel] | None) -> object:
    """The answer as text, or validated against `schema`; ValueError if unusable."""
    if not content or not content.strip():
        raise ValueError("the answer was empty")
    if schema is None:
        return content
    return schema.model_validate_json(content)


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
