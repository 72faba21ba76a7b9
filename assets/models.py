"""Typed boundaries between assets. Ids are derived from content, never random."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from resources.llm.normalise import Citation, EnumSynonyms, LanguageCode

DocumentFormat = Literal["txt", "md", "html", "pdf"]


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    path: str
    format: DocumentFormat
    title: str | None
    text: str
    n_chars: int
    n_bytes: int
    n_pages: int | None
    source_sha256: str  # of the file's bytes: what the sensor watches
    text_sha256: str  # of the normalised text: the asset's data version


# The fixed category list of chunk metadata (changing it is a prompt change).
Category = Literal[
    "billing", "authentication", "data_export", "api_integration", "mobile_app", "pricing",
    "security", "incident", "product_update", "customer_success", "other",
]
# What servers without enum-constrained decoding write instead (case, spacing, hyphens and
# plurals are folded anyway); anything else unknown becomes "other".
CATEGORY_SYNONYMS = EnumSynonyms({
    "payment": "billing", "payments": "billing", "invoice": "billing", "invoicing": "billing",
    "refund": "billing", "charge": "billing", "charges": "billing",
    "auth": "authentication", "login": "authentication", "sso": "authentication",
    "identity": "authentication", "export": "data_export", "exports": "data_export",
    "api": "api_integration", "integration": "api_integration", "webhook": "api_integration",
    "mobile": "mobile_app", "app": "mobile_app", "ios": "mobile_app", "android": "mobile_app",
    "price": "pricing", "plans": "pricing", "secure": "security", "vulnerability": "security",
    "outage": "incident", "postmortem": "incident", "release": "product_update",
    "release_notes": "product_update", "feature": "product_update", "update": "product_update",
    "customer_story": "customer_success", "case_study": "customer_success",
    "onboarding": "customer_success", "support": "customer_success",
})


class ChunkMetadata(BaseModel):
    """What the LLM says about one chunk; validated before it is stored or cached."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(max_length=200)
    summary: str = Field(max_length=1000)
    keywords: list[str] = Field(max_length=8)
    category: Annotated[Category, CATEGORY_SYNONYMS]
    # ISO 639-1, or "und" when the language is not one the ISO data can place
    language: Annotated[str, LanguageCode] = Field(pattern=r"^([a-z]{2}|und)$")
    contains_personal_data: bool


# A theme signature is snake_case: lowercase words joined by underscores.
SIGNATURE_PATTERN = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"


class Theme(BaseModel):
    """One theme of a document as the LLM states it, citing the passages that show it."""

    # Citations are strings, and numbers are taken as strings, so that 3, "3", "[3]" or
    # "passage 3" all validate: assets/citations.py maps them to chunk ids, and one it
    # cannot map costs only itself (the docstring above is sent to the model: keep it short).
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    signature: str = Field(pattern=SIGNATURE_PATTERN, max_length=80)
    label: str = Field(max_length=120)
    description: str = Field(max_length=600)
    evidence: list[Annotated[str, Citation]] = Field(
        max_length=10, description='the numbers of the passages that show the theme, e.g. "3"')


class DocumentThemeList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    themes: list[Theme] = Field(max_length=8)


class ThemeVote(BaseModel):
    """One independent judgement of how well the evidence supports a theme."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5)
    rationale: str = Field(max_length=400)


class ExtractedEntity(BaseModel):
    """An entity named in a chunk. `type` is free text checked afterwards against the
    graph's allowlist (resources/neo4j/model.py): anything else is remapped and counted,
    so an odd answer costs one entity's label, not the whole chunk."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    type: str = Field(max_length=40)
    aliases: list[str] = Field(max_length=5)


class ExtractedRelation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=200)  # an entity's name
    target: str = Field(min_length=1, max_length=200)
    type: str = Field(max_length=40)
    description: str = Field(max_length=300)


class ChunkGraph(BaseModel):
    """What one chunk says: its entities and the relationships between them."""

    model_config = ConfigDict(extra="forbid")

    entities: list[ExtractedEntity] = Field(max_length=30)
    relationships: list[ExtractedRelation] = Field(max_length=30)
