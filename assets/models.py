"""Typed boundaries between assets. Ids are derived from content, never random."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class ChunkMetadata(BaseModel):
    """What the LLM says about one chunk; validated before it is stored or cached."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(max_length=200)
    summary: str = Field(max_length=1000)
    keywords: list[str] = Field(max_length=8)
    category: Category
    language: str = Field(pattern=r"^[a-z]{2}$")
    contains_personal_data: bool
