"""Entity resolution (a pure function): normalisation, merging, choices, and the two
properties the graph relies on — order independence and idempotence."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from resources.graph_resolution import (
    EntityMention,
    ResolvedEntity,
    normalise,
    resolve_entities,
)


def test_normalise_folds_case_punctuation_suffixes_and_leading_the():
    assert normalise("The ACME Corp.") == "acme"
    assert normalise("Acme, Inc.") == normalise("ACME Inc") == normalise("acme") == "acme"
    assert normalise("Acme Co., Ltd.") == "acme"
    assert normalise("Northwind Traders GmbH") == "northwind traders"
    assert normalise("  Lumen\u00a0Ledger\tplc ") == "lumen ledger"
    assert normalise("McDonald's") == normalise("McDonald\u2019s") == "mcdonalds"
    assert normalise("AT&T") == "at&t"
    assert normalise("C#") == "c#" and normalise("C++") == "c++"
    assert normalise("Ｏｋｔａ") == "okta"  # NFKC folds full-width letters
    # accents are kept (see the module docstring)
    assert normalise("Tomás Alvarez") == "tomás alvarez" != normalise("Tomas Alvarez")


def test_normalise_never_removes_the_whole_name():
    assert normalise("Inc.") == "inc"
    assert normalise("The") == "the"
    assert normalise("The Co") == "co"
    assert normalise("!!!") == ""


def test_mentions_with_one_normalised_name_merge_with_counted_choices():
    resolution = resolve_entities([
        EntityMention("Acme Logistics", "Organization"),
        EntityMention("Acme Logistics", "Organization"),
        EntityMention("ACME Logistics Inc.", "Product"),
        EntityMention("acme logistics", "Vehicle"),  # outside the allowlist: Concept
    ])
    [entity] = resolution.entities
    assert entity == ResolvedEntity(
        key="Organization:acme logistics", name="Acme Logistics", type="Organization",
        aliases=("ACME Logistics Inc.", "acme logistics"), mentions=4)
    assert resolution.remapped_types == 1
    assert resolution.key_for("the acme logistics, llc") == entity.key


def test_ties_are_broken_by_allowlist_order_and_lexicographically():
    [entity] = resolve_entities([EntityMention("okta", "Product"),
                                 EntityMention("Okta", "Organization")]).entities
    assert entity.type == "Organization"  # Organization comes before Product
    assert entity.name == "Okta"  # "Okta" < "okta"
    assert entity.key == "Organization:okta"


def test_aliases_link_entities_transitively():
    resolution = resolve_entities([
        EntityMention("International Business Machines", "Organization", ("IBM",)),
        EntityMention("IBM", "Organization", ("Big Blue",)),
        EntityMention("Big Blue", "Organization"),
        EntityMention("Priya Raman", "Person", ("the engineer",)),
        EntityMention("Marcus Feld", "Person", ("the engineer",)),  # alias-alias: no link
    ])
    assert [e.name for e in resolution.entities] == [
        "Big Blue", "Marcus Feld", "Priya Raman"]  # one each, ties lexicographic
    big_blue = resolution.entities[0]
    assert big_blue.aliases == ("IBM", "International Business Machines")
    assert resolution.key_for("ibm") == resolution.key_for("Big Blue") == big_blue.key
    assert resolution.key_for("the engineer") is None  # ambiguous alias maps nowhere


def test_type_is_part_of_the_key_so_separately_resolved_homonyms_stay_apart():
    company = resolve_entities([EntityMention("Apple Inc.", "Organization")]).entities[0]
    fruit = resolve_entities([EntityMention("apple", "Concept")]).entities[0]
    assert company.key == "Organization:apple" and fruit.key == "Concept:apple"


def test_empty_names_are_dropped_and_counted():
    resolution = resolve_entities([EntityMention("Inc.", "Organization"),
                                   EntityMention("...", "Organization", count=3)])
    assert [e.key for e in resolution.entities] == ["Organization:inc"]
    assert resolution.dropped == 3


# -- properties ------------------------------------------------------------------------
NAMES = ["Acme", "ACME Inc.", "acme", "The Acme Corp", "Acme Logistics", "Okta", "okta, inc",
         "Priya Raman", "priya raman", "Apple", "apple", "IBM", "Big Blue", "Tomás",
         "Tomas", "McDonald's", "AT&T", "Inc.", "!!"]
TYPES = ["Person", "Organization", "Product", "Location", "Event", "Concept", "Vehicle",
         "organization"]
name = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))
mention = st.builds(EntityMention, name=name, type=st.sampled_from(TYPES),
                    aliases=st.lists(name, max_size=3).map(tuple),
                    count=st.integers(min_value=1, max_value=3))
corpus = st.lists(mention, max_size=25)


@given(st.text())
def test_normalise_is_idempotent(text):
    assert normalise(normalise(text)) == normalise(text)


@settings(max_examples=300)
@given(corpus, st.randoms(use_true_random=False))
def test_any_order_gives_the_same_resolution(mentions, rng: random.Random):
    shuffled = list(mentions)
    rng.shuffle(shuffled)
    assert resolve_entities(shuffled) == resolve_entities(mentions)


@settings(max_examples=300)
@given(corpus)
def test_resolving_resolved_output_changes_nothing(mentions):
    first = resolve_entities(mentions)
    again = resolve_entities(e.as_mention() for e in first.entities)
    assert again.entities == first.entities
    assert again.key_by_form == first.key_by_form


@settings(max_examples=300)
@given(corpus)
def test_every_kept_name_maps_to_one_of_the_entities(mentions):
    resolution = resolve_entities(mentions)
    keys = {e.key for e in resolution.entities}
    assert len(keys) == len(resolution.entities)
    for m in mentions:
        if normalise(m.name):
            assert resolution.key_for(m.name) in keys
