"""Canonicalisation of themes: a pure function, whatever the order of its input, with ids
that adding documents never changes."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from assets.catalog import ThemeMention, canonical_themes, normalize_signature

WORDS = ["billing", "double", "charge", "charges", "sso", "okta", "export", "timeout",
         "rate", "limit", "limits", "mobile", "crash", "issue"]


def _vector(signature: str) -> tuple[float, ...]:
    """A toy embedding: one dimension per word, so shared words mean similar themes."""
    words = set(normalize_signature(signature).split("_"))
    return tuple(1.0 if w in words else 0.0 for w in map(normalize_signature, WORDS))


def _mention(doc: str, signature: str, score: float = 4.0) -> ThemeMention:
    return ThemeMention(doc, signature, signature.replace("_", " "), f"about {signature}",
                        score, _vector(signature))


mentions_strategy = st.lists(
    st.builds(_mention, st.sampled_from([f"doc{i}" for i in range(6)]),
              st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map("_".join),
              st.sampled_from([3.0, 4.0, 5.0])),
    max_size=30,
)
SEEN = {f"doc{i}": f"2026-01-0{i + 1}T00:00:00+00:00" for i in range(7)}


def test_normalised_signatures():
    assert normalize_signature("rate_limits") == normalize_signature("limit_rate")
    assert normalize_signature("Billing-Issue") == "billing"
    assert normalize_signature("categories") == "category"
    assert normalize_signature("access") == "access"
    assert normalize_signature("issue") == "general"


@settings(max_examples=60, deadline=None)
@given(mentions_strategy, st.randoms(use_true_random=False))
def test_any_order_gives_the_same_catalog(mentions, rng):
    shuffled = list(mentions)
    rng.shuffle(shuffled)
    first = canonical_themes(mentions, SEEN, 0.8).model_dump_json()
    assert canonical_themes(shuffled, SEEN, 0.8).model_dump_json() == first


@settings(max_examples=60, deadline=None)
@given(mentions_strategy, mentions_strategy)
def test_adding_a_later_document_never_renames_a_theme(mentions, extra):
    before = canonical_themes(mentions, SEEN, 0.8)
    added = [ThemeMention("doc6", m.signature, m.label, m.description, m.score, m.embedding)
             for m in extra]  # doc6 is registered after every other document
    after = {t.theme_id: t for t in canonical_themes([*mentions, *added], SEEN, 0.8).themes}
    for theme in before.themes:
        assert theme.theme_id in after
        assert set(theme.signatures) <= set(after[theme.theme_id].signatures)
        assert set(theme.documents) <= set(after[theme.theme_id].documents)


def test_near_duplicates_merge_into_the_oldest_and_counts_add_up():
    mentions = [
        _mention("doc2", "double_charge", 5.0),
        _mention("doc0", "billing_double_charge", 4.0),
        _mention("doc1", "charges_double", 3.0),  # same normalised signature as doc2's
        _mention("doc3", "okta_sso"),
    ]
    catalog = canonical_themes(random.Random(1).sample(mentions, 4), SEEN, 0.8)
    [charge, sso] = catalog.themes
    assert charge.theme_id == "billing_double_charge"  # doc0 was registered first
    assert charge.signatures == ["billing_double_charge", "charges_double", "double_charge"]
    assert charge.documents == ["doc0", "doc1", "doc2"] and charge.mention_count == 3
    assert charge.mean_score == 4.0
    assert (charge.first_seen, charge.last_seen) == (SEEN["doc0"], SEEN["doc2"])
    assert sso.theme_id == "okta_sso" and sso.document_count == 1
    assert catalog.mentions == 4 and catalog.documents == 4
    # a threshold above every similarity merges only equal normalised signatures
    strict = canonical_themes(mentions, SEEN, 1.01)
    assert [t.theme_id for t in strict.themes] == [
        "charges_double", "billing_double_charge", "okta_sso"]
