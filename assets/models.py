"""Typed boundaries between assets. Ids are derived from content, never random."""

from typing import Literal

from pydantic import BaseModel, ConfigDict

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
