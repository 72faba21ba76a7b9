"""Tolerant structured outputs: what is normalised before validating, and what is not."""

import json
import re
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assets.models import SIGNATURE_PATTERN, Category, ChunkMetadata, DocumentThemeList, ThemeVote
from resources.llm import languages
from resources.llm.languages import language_code
from resources.llm.normalise import UNWRAPPED, normalise, unwrap_json
from resources.llm.structured import json_schema, parse

MEMBERS = typing.get_args(Category)
language_code("en")  # load the ISO tables once, outside hypothesis's per-example deadline
LANGUAGES = [("English", "en"), ("French", "fr"), ("German", "de"), ("Spanish", "es"),
             ("Japanese", "ja"), ("Portuguese", "pt"), ("Dutch", "nl"), ("Italian", "it"),
             ("Chinese", "zh"), ("Russian", "ru"), ("Greek", "el"), ("Swedish", "sv")]
NATIVE = [("Français", "fr"), ("Deutsch", "de"), ("Español", "es"), ("Italiano", "it"),
          ("Nederlands", "nl"), ("Português", "pt"), ("русский", "ru"), ("日本語", "ja")]


def metadata(**changes) -> dict:
    base = {"title": "Double charge", "summary": "A customer was charged twice.",
            "keywords": ["refund"], "category": "billing", "language": "en",
            "contains_personal_data": False}
    return {**base, **changes}


def any_case(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flags: "".join(c.upper() if f else c.lower() for c, f in zip(text, flags,
                                                                           strict=True)))


@st.composite
def spelled(draw, member: str) -> str:
    """`member` as a loose model might write it: any case, spaces or hyphens, a plural."""
    words = [draw(any_case(w)) for w in member.split("_")]
    seps = [draw(st.sampled_from([" ", "-", "_", "  ", " - "])) for _ in words[1:]]
    text = words[0] + "".join(s + w for s, w in zip(seps, words[1:], strict=True))
    if draw(st.booleans()) and not text.lower().endswith("s"):
        text += draw(st.sampled_from(["s", "S"]))
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " "]))


@given(st.sampled_from(MEMBERS).flatmap(lambda m: st.tuples(st.just(m), spelled(m))))
def test_any_spelling_of_a_category_is_the_category(case):
    member, text = case
    value, counts = normalise(metadata(category=text), ChunkMetadata)
    assert ChunkMetadata.model_validate(value).category == member
    assert counts.get("ChunkMetadata.category", 0) == (text != member)


@given(st.text(alphabet="xyzqjk -", min_size=1, max_size=20))
def test_an_unknown_category_is_other(text):
    value, _ = normalise(metadata(category=text), ChunkMetadata)
    assert value["category"] == "other"


@pytest.mark.parametrize(("text", "member"), [
    ("payments", "billing"), ("Auth", "authentication"), ("SSO", "authentication"),
    ("Release Notes", "product_update"), ("API", "api_integration"), ("DataExport",
                                                                       "data_export")])
def test_known_synonyms_are_their_member(text, member):
    assert normalise(metadata(category=text), ChunkMetadata)[0]["category"] == member


def test_an_enum_without_a_fallback_is_left_for_validation_to_reject():
    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")
        colour: typing.Literal["red", "dark_blue"]

    assert normalise({"colour": "Dark-Blue"}, Strict)[0] == {"colour": "dark_blue"}
    with pytest.raises(ValidationError):
        Strict.model_validate(normalise({"colour": "purple"}, Strict)[0])


@given(st.sampled_from(LANGUAGES + NATIVE).flatmap(
    lambda pair: st.tuples(st.just(pair[1]), any_case(pair[0]))))
def test_language_names_in_any_case_are_their_code(case):
    code, name = case
    assert language_code(name) == code


def test_the_shipped_own_language_names_are_the_installed_pycountrys():
    shipped = json.loads(languages.OWN_NAMES.read_text(encoding="utf-8"))
    assert shipped == languages.own_language_names(), (
        "pycountry changed: run languages.write_own_language_names() and commit the file")
    assert shipped["fr"] == "Français" and shipped["de"] == "Deutsch"


@given(st.sampled_from([c for _, c in LANGUAGES]).flatmap(lambda code: st.tuples(
    st.just(code), any_case(code), st.sampled_from(["", "-", "_", " "]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=2,
            max_size=2))))
def test_language_codes_with_any_case_and_region_are_the_code(case):
    code, written, sep, region = case
    text = written + (sep + region if sep else "")
    assert language_code(text) == code
    value, counts = normalise(metadata(language=text), ChunkMetadata)
    assert ChunkMetadata.model_validate(value).language == code
    assert counts.get("ChunkMetadata.language", 0) == (text != code)


@pytest.mark.parametrize("text", ["Klingon", "Sindarin", "zz", "qq-ZZ", "", "???"])
def test_an_unknown_language_is_und_and_valid(text):
    value, _ = normalise(metadata(language=text), ChunkMetadata)
    assert ChunkMetadata.model_validate(value).language == "und"


@given(st.text(max_size=600), st.text(max_size=3000),
       st.lists(st.text(max_size=30), max_size=30))
def test_over_long_strings_and_lists_are_cut_within_their_limits(title, summary, keywords):
    value, counts = normalise(metadata(title=title, summary=summary, keywords=keywords),
                              ChunkMetadata)
    model = ChunkMetadata.model_validate(value)
    assert title.startswith(model.title) and len(model.title) <= 200
    assert summary.startswith(model.summary) and len(model.summary) <= 1000
    assert model.keywords == keywords[:8]
    assert counts.get("ChunkMetadata.summary", 0) == (len(summary) > 1000)
    if len(summary) > 1000 and " " in summary[500:1000]:
        assert summary[len(model.summary)] in " _-,;:"  # cut at a word boundary


@given(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=1,
                max_size=6), st.data())
def test_signatures_in_words_become_snake_case(words, data):
    text = data.draw(spelled("_".join(words)).filter(lambda t: not t.strip().endswith(("s",
                                                                                     "S"))))
    theme = {"signature": text, "label": "L", "description": "D", "evidence": []}
    value, _ = normalise({"themes": [theme]}, DocumentThemeList)
    signature = DocumentThemeList.model_validate(value).themes[0].signature
    assert re.fullmatch(SIGNATURE_PATTERN, signature)
    assert signature == "_".join(w.lower() for w in re.split(r"[\s_-]+", text.strip()))


def test_a_long_signature_is_cut_at_an_underscore_and_stays_valid():
    theme = {"signature": "Billing Double Charge " * 10, "label": "L", "description": "D",
             "evidence": ["[3]", "passage 4", "#5", "chunk: ab12cd34"]}
    value, counts = normalise({"themes": [theme]}, DocumentThemeList)
    parsed = DocumentThemeList.model_validate(value).themes[0]
    assert len(parsed.signature) <= 80 and parsed.signature.startswith("billing_double_charge")
    assert parsed.evidence == ["3", "4", "5", "ab12cd34"]
    assert counts == {"Theme.signature": 1, "Theme.evidence": 4}


@given(st.one_of(st.integers(-10**6, 10**6), st.floats(-100, 100),
                 st.integers(-50, 50).map(str), st.floats(-9, 9).map(lambda f: f"{f:.2f}")))
def test_scores_are_coerced_and_clamped(score):
    value, _ = normalise({"score": score, "rationale": "r"}, ThemeVote)
    assert 1 <= ThemeVote.model_validate(value).score <= 5


def test_a_bool_is_not_a_number():
    value, counts = normalise({"score": True, "rationale": "r"}, ThemeVote)
    assert value["score"] is True and not counts


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=80),
       st.text(max_size=80), st.booleans())
def test_json_in_prose_or_a_code_fence_is_unwrapped(before, after, fenced):
    body = json.dumps(metadata())
    content = f"{before}\n```json\n{body}\n```\n{after}" if fenced else f"{before} {body} {after}"
    value, counts = parse(content, ChunkMetadata)
    assert value == ChunkMetadata.model_validate(metadata())
    assert counts[UNWRAPPED] == (content.strip() != body)


def test_a_clean_answer_is_not_counted_and_no_json_is_an_error():
    value, counts = parse(json.dumps(metadata()), ChunkMetadata)
    assert not counts and value.category == "billing"
    with pytest.raises(ValueError):
        unwrap_json("no JSON here, only {braces that never close")
    with pytest.raises(ValueError):
        parse("I cannot help with that.", ChunkMetadata)


def test_what_cannot_be_normalised_still_fails_validation():
    with pytest.raises(ValidationError):
        parse(json.dumps(metadata(contains_personal_data="perhaps")), ChunkMetadata)
    with pytest.raises(ValidationError):
        parse(json.dumps(metadata(keywords="refund")), ChunkMetadata)


def test_the_schema_sent_is_openais_strict_schema_with_only_the_language_pattern_new():
    schema = json_schema(ChunkMetadata)
    assert schema["properties"]["language"] == {
        "pattern": "^([a-z]{2}|und)$", "title": "Language", "type": "string"}
    assert schema["properties"]["category"] == {"enum": list(MEMBERS), "title": "Category",
                                                "type": "string"}
    evidence = json_schema(DocumentThemeList)["$defs"]["Theme"]["properties"][
        "evidence"]
    assert evidence == {"items": {"type": "string"}, "maxItems": 10, "title": "Evidence",
                        "type": "array", "description": evidence["description"]}

    class Plain(BaseModel):  # the markers add nothing to the schema
        model_config = ConfigDict(extra="forbid")
        language: str = Field(pattern=r"^([a-z]{2}|und)$")

    assert json_schema(Plain)["properties"]["language"] == schema["properties"]["language"]


def test_half_scores_round_up_and_infinities_are_left_for_validation():
    assert normalise({"score": 2.5, "rationale": "r"}, ThemeVote)[0]["score"] == 3
    assert normalise({"score": "3.5", "rationale": "r"}, ThemeVote)[0]["score"] == 4
    with pytest.raises(ValueError):  # a ValueError: the engine's repair path takes it
        parse('{"score": 1e400, "rationale": "r"}', ThemeVote)


@pytest.mark.parametrize(("text", "code"), [
    ("iw", "he"), ("in-ID", "id"), ("ji", "yi"), ("Old English", "und"),
    ("Ancient Greek", "und"), ("written in English", "en")])
def test_withdrawn_codes_and_qualified_names(text, code):
    assert language_code(text) == code
