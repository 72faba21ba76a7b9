"""The offline provider answers any reasonable schema validly and deterministically."""

import datetime as dt
import json
import re
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from assets.models import ChunkGraph, DocumentThemeList
from assets.prompts import DOCUMENT_THEMES
from resources.llm.offline import analytics as ta
from resources.llm.offline.answers import answer, original_request
from resources.llm.offline.app import chat_completion, embeddings
from resources.llm.structured import json_schema, parse, repair_turn, response_format
from simulator.memo import CHEAP
from tests.conftest import SAMPLE_DIR

TEXT = (SAMPLE_DIR / "support-chat-double-charge.txt").read_text()


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    type: Literal["Person", "Organization", "Product", "Location", "Event", "Concept"]
    aliases: list[str]


class Everything(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=5, max_length=80)
    summary: str
    keywords: list[str] = Field(max_length=8)
    scores: list[int]
    day: dt.date
    at: dt.datetime
    ref: uuid.UUID
    quality: float = Field(gt=0, lt=1)
    votes: int = Field(ge=1, le=5)
    language: str
    contains_personal_data: bool
    entities: list[Entity]
    note: str | None = None


def _ask(model: type[BaseModel], text: str = TEXT):
    messages = [{"role": "user", "content": f"<document>{text}</document>"}]
    return answer(model.model_json_schema(), messages)


def test_answers_validate_against_the_schema_and_repeat_exactly():
    first = Everything.model_validate(_ask(Everything))
    assert first == Everything.model_validate(_ask(Everything))
    names = {e.name for e in first.entities}
    assert {"Priya Raman", "Bluebird Dental", "Stripe"} <= names
    types = {e.name: e.type for e in first.entities}
    assert types["Priya Raman"] == "Person" and types["Bluebird Dental"] == "Organization"
    assert first.contains_personal_data is True and first.language == "en"


def test_chat_and_embedding_responses_have_openai_shape_and_usage():
    body = {"model": "m", "messages": [{"role": "user", "content": TEXT}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "E", "schema":
                                                Everything.model_json_schema()}}}
    reply = chat_completion(body)
    Everything.model_validate_json(reply["choices"][0]["message"]["content"])
    assert reply["usage"]["prompt_tokens"] > 100 and reply["usage"]["completion_tokens"] > 10
    vectors = embeddings({"model": "e", "input": ["Okta SSO login fails", "Okta SSO login fail",
                                                   "pricing for 2027"], "dimensions": 64})
    a, b, c = (d["embedding"] for d in vectors["data"])
    assert len(a) == 64 and abs(sum(x * x for x in a) - 1) < 1e-3
    cosine = lambda u, v: sum(x * y for x, y in zip(u, v, strict=True))  # noqa: E731
    assert cosine(a, b) > cosine(a, c)  # similar wording, closer vectors
    assert json.dumps(embeddings({"input": "x"})) == json.dumps(embeddings({"input": "x"}))


def test_keywords_and_signatures_are_deterministic_text_analytics():
    assert ta.keywords("Refund refund refund the double charge. Charge twice.", 2) == [
        "refund", "charge"]
    assert ta.signature(["Billing", "Double-Charge"]) == "billing_double_charge"


def _numbered(text: str) -> str:
    """TEXT as the theme prompt shows a document: paragraphs after [1], [2], …"""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "\n\n".join(f"[{n}]\n{p}" for n, p in enumerate(paragraphs, start=1))


def _chat(messages: list[dict], schema: type[BaseModel] | None = None) -> str:
    body = {"model": "m", "messages": messages}
    if schema is not None:
        body["response_format"] = response_format(schema)
    return chat_completion(body)["choices"][0]["message"]["content"]


def test_themes_cite_the_passage_numbers_the_prompt_shows():
    document = _numbered(TEXT)
    answered = DocumentThemeList.model_validate(answer(
        json_schema(DocumentThemeList), DOCUMENT_THEMES.messages(document)))
    shown = {str(n) for n in range(1, document.count("\n\n") + 2)}
    assert answered.themes and all(t.evidence for t in answered.themes)
    for theme in answered.themes:
        assert set(theme.evidence) <= shown
        assert not any(re.search(r"\[\d+\]", t) for t in (theme.label, theme.description))


def test_a_repair_turn_is_answered_as_the_original_request():
    messages = DOCUMENT_THEMES.messages(_numbered(TEXT))
    for schema in (DocumentThemeList, ChunkGraph, None):
        clean = _chat(messages, schema)
        try:
            parse(clean[: len(clean) // 2], schema or DocumentThemeList)
        except ValueError as error:
            repaired = [*messages, *repair_turn(clean[: len(clean) // 2], error)]
        assert original_request(repaired) == messages
        assert _chat(repaired, schema) == clean
    # a later turn that is not our repair prompt is part of the request
    follow_up = [*messages, {"role": "assistant", "content": "{}"},
                 {"role": "user", "content": "Your previous answer was fine, thanks."}]
    assert original_request(follow_up) == follow_up


def test_cheap_answers_are_the_full_answers_with_estimated_usage():
    """The simulator's cheap mode (simulator/memo.py) changes the CPU an answer costs, not the
    answer: asked twice each (the second time from its caches), every prompt gets the same
    content as in the full mode; only the token counts are estimated."""
    from assets.models import ChunkMetadata
    from assets.prompts import CHUNK_METADATA, GRAPH_EXTRACTION

    asks = [(CHUNK_METADATA.messages(TEXT), ChunkMetadata),
            (GRAPH_EXTRACTION.messages(TEXT), ChunkGraph),
            (DOCUMENT_THEMES.messages(_numbered(TEXT)), DocumentThemeList),
            ([{"role": "user", "content": TEXT}], Everything),
            ([{"role": "user", "content": TEXT}], None)]
    for messages, schema in asks:
        body = {"model": "m", "messages": messages}
        if schema is not None:
            body["response_format"] = response_format(schema)
        full = chat_completion(body)
        for _ in range(2):
            cheap = chat_completion(body, CHEAP)
            assert cheap["choices"] == full["choices"]
            assert cheap["usage"]["prompt_tokens"] > 100
    body = {"input": [TEXT, "Okta SSO login fails"], "dimensions": 64}
    assert embeddings(body, CHEAP)["data"] == embeddings(body)["data"]
