"""Citations by passage number map back to chunk ids, whatever way a model spells them."""

import hashlib

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assets.citations import resolve_citation, resolve_citations
from assets.models import Theme, ThemeVote
from assets.themes import (
    ThemeConfig,
    document_passages,
    evidence_check,
    judging_items,
    themes_description,
    themes_frame,
    unique_themes,
)
from resources.llm import ChatItem, ItemResult

IDS = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(12)]


@pytest.mark.parametrize("citation", [
    "3", 3, "[3]", "#3", "passage 3", "chunk 3", "[chunk:3]", " 3 ", "Passage 3", "PASSAGE #3",
    "[ 3 ]", "chunk:3", "03", IDS[2], IDS[2].upper(), f"[chunk:{IDS[2]}]", f" chunk {IDS[2]} ",
])
def test_every_accepted_spelling_names_the_third_chunk(citation):
    assert resolve_citation(citation, IDS) == IDS[2]


@pytest.mark.parametrize("citation", [
    "0", "13", "-1", 0, 13, "3.0", "three", "", " ", "[]", "passage", "p3", "[[3]]", "3, 4",
    IDS[2][:8], "f" * 32, None, True, 3.0, ["3"], "٣", "9" * 5000,
])
def test_anything_else_is_unknown(citation):
    assert resolve_citation(citation, IDS) is None


def test_a_theme_loses_only_the_citations_that_fail_and_keeps_first_order():
    cited = resolve_citations(["4", "[2]", "passage 99", IDS[3], "#2", "garbage", 1], IDS)
    assert cited.chunk_ids == [IDS[3], IDS[1], IDS[0]]
    assert cited.unknown == ["passage 99", "garbage"]
    assert resolve_citations([], IDS) == resolve_citations([], [])


def test_an_exact_id_wins_over_a_number():
    ids = ["2", "ab"]  # an id that is all digits names itself, not passage 2
    assert resolve_citation("2", ids) == "2" and resolve_citation("1", ids) == "2"


def test_the_theme_model_takes_numbers_as_strings():
    theme = Theme.model_validate({"signature": "export_timeout", "label": "Export timeout",
                                  "description": "d", "evidence": [3, "[4]", "passage 5"]})
    assert theme.evidence == ["3", "[4]", "passage 5"]
    assert resolve_citations(theme.evidence, IDS).chunk_ids == IDS[2:5]


def test_passages_are_numbered_in_document_order():
    chunks = pd.DataFrame({"chunk_id": IDS[:3], "text": ["alpha", "beta", "gamma"],
                           "n_tokens": [1, 1, 1]})
    shown = document_passages(chunks, pd.DataFrame({"chunk_id": IDS[:3]}), budget=100)
    assert shown == "[1]\nalpha\n\n[2]\nbeta\n\n[3]\ngamma"
    assert IDS[0] not in shown


def _theme(signature: str, *evidence: object) -> Theme:
    return Theme.model_validate({"signature": signature, "label": signature,
                                 "description": "d", "evidence": list(evidence)})


def test_an_unknown_citation_costs_only_itself_and_an_uncited_theme_is_not_judged():
    chunks = pd.DataFrame({"chunk_id": IDS[:3], "text": ["alpha", "beta", "gamma"]})
    themes = unique_themes([
        _theme("billing_refund", "1", "garbage", "[3]"),
        _theme("sso_failure", "99", "passage 0"),  # nothing it cites exists
        _theme("billing_refund", "#3", "2"),  # a repeat: its citations join the first's
    ])
    citations = [resolve_citations(t.evidence, IDS[:3]) for t in themes]
    config = ThemeConfig(votes=2)
    items = judging_items("doc", themes, citations, chunks, config)
    votes = [i for i in items if isinstance(i, ChatItem)]
    assert [i.key for i in votes] == ["doc:billing_refund#vote0", "doc:billing_refund#vote1"]
    # the judges read the cited passages' text, under the numbers the extraction saw
    assert "[1]\nalpha\n\n[3]\ngamma\n\n[2]\nbeta" in votes[0].messages[1]["content"]

    results = {"doc:themes": ItemResult("doc:themes", "extracted"),
               "doc:embed": ItemResult("doc:embed", [[1.0, 0.0], [0.0, 1.0]]),
               **{i.key: ItemResult(i.key, ThemeVote(score=4, rationale="r")) for i in votes}}
    rows = themes_frame("doc", themes, citations, results, config).set_index("signature")
    billing, sso = rows.loc["billing_refund"], rows.loc["sso_failure"]
    assert billing.evidence == ["1", "garbage", "[3]", "#3", "2"]
    assert billing.evidence_chunk_ids == billing.cited_chunk_ids == [IDS[0], IDS[2], IDS[1]]
    assert billing.citations_unknown == ["garbage"] and billing.kept and billing.score == 4
    assert sso.cited_chunk_ids == [] and sso.votes == [] and not sso.kept
    assert sso.citations_unknown == ["99", "passage 0"]

    counts = themes_description(rows.reset_index(), config)
    assert counts["citations"].value == 7 and counts["citations_unknown"].value == 3
    check = evidence_check("doc", rows.reset_index())
    assert not check.passed and check.metadata["without_evidence"].value == 1
    assert check.metadata["uncited"].value == [
        {"signature": "sso_failure", "evidence": ["99", "passage 0"]}]


NUMBER_SPELLINGS = [
    str, int, "[{}]".format, "#{}".format, "passage {}".format, "Chunk {}".format,
    "[chunk:{}]".format, "passage #{}".format,
]
ID_SPELLINGS = [str, str.upper, "[chunk:{}]".format, "chunk {}".format]
spaces = st.sampled_from(["", " ", "  ", "\t", "\n"])
id_lists = st.lists(st.text("0123456789abcdef", min_size=32, max_size=32), min_size=1,
                    max_size=40, unique=True)


def padded(draw, citation):
    return f"{draw(spaces)}{citation}{draw(spaces)}" if isinstance(citation, str) else citation


@given(st.data())
def test_any_accepted_spelling_of_a_valid_number_or_id_maps_back(data):
    ids = data.draw(id_lists)
    number = data.draw(st.integers(1, len(ids)))
    by_number = data.draw(st.sampled_from(NUMBER_SPELLINGS))(number)
    by_id = data.draw(st.sampled_from(ID_SPELLINGS))(ids[number - 1])
    assert resolve_citation(padded(data.draw, by_number), ids) == ids[number - 1]
    assert resolve_citation(padded(data.draw, by_id), ids) == ids[number - 1]


@given(st.data())
def test_a_number_out_of_range_never_maps(data):
    ids = data.draw(id_lists)
    number = data.draw(st.one_of(st.integers(max_value=0), st.integers(min_value=len(ids) + 1)))
    spell = data.draw(st.sampled_from(NUMBER_SPELLINGS))
    assert resolve_citation(padded(data.draw, spell(number)), ids) is None


@given(st.data())
def test_mapped_ids_are_unique_in_first_citation_order_and_unknowns_are_counted(data):
    ids = data.draw(id_lists)
    numbers = data.draw(st.lists(st.integers(-3, len(ids) + 3), max_size=25))
    noise = st.sampled_from(["x", "[", "#", "passage", "chunk:", ""])
    citations = [data.draw(st.one_of(st.just(str(n)), noise)) for n in numbers]
    cited = resolve_citations(citations, ids)
    valid = [int(c) for c in citations if c.lstrip("-").isdigit() and 1 <= int(c) <= len(ids)]
    assert cited.chunk_ids == list(dict.fromkeys(ids[n - 1] for n in valid))
    assert cited.unknown == [c for c in citations if c not in {str(n) for n in valid}]
