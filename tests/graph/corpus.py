"""Small documents for the graph tests, written as facts: ("Person:Priya Raman",
"WORKS_FOR", "Organization:Acme"). Each fact is one chunk that mentions both entities and
asserts the relationship; entity keys are "<Type>:<name casefolded>"."""

import hashlib
from dataclasses import dataclass, field

from resources.neo4j import (
    ChunkRow,
    DocumentRow,
    EntityRow,
    GraphWriter,
    Mention,
    RelationRow,
    WriteStats,
)

DIMENSIONS = 8
Fact = tuple[str, str, str]


def embedding(text: str) -> list[float]:
    """A deterministic vector per text (not a meaningful one)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(b - 127.5) / 127.5 for b in digest[:DIMENSIONS]]


def entity_key(ref: str) -> str:
    kind, name = ref.split(":", 1)
    return f"{kind}:{name.casefold()}"


@dataclass
class Doc:
    document: DocumentRow
    chunks: list[ChunkRow] = field(default_factory=list)
    entities: list[EntityRow] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)
    relationships: list[RelationRow] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.document.key

    def write(self, writer: GraphWriter, **kwargs) -> WriteStats:
        return writer.replace_document(self.document, self.chunks, self.entities,
                                       self.mentions, self.relationships, **kwargs)


def doc(key: str, *facts: Fact, title: str | None = None) -> Doc:
    result = Doc(DocumentRow(key=key, path=f"docs/{key}.md", title=title or key.title()))
    entities: dict[str, EntityRow] = {}
    for index, (source, relation, target) in enumerate(facts):
        chunk_id = f"{key}#{index}"
        text = f"{source.split(':', 1)[1]} {relation.lower()} {target.split(':', 1)[1]}."
        result.chunks.append(ChunkRow(chunk_id, key, index, text, embedding(text)))
        for ref in (source, target):
            kind, name = ref.split(":", 1)
            entities.setdefault(entity_key(ref), EntityRow(entity_key(ref), name, kind))
            result.mentions.append(Mention(chunk_id, entity_key(ref)))
        result.relationships.append(
            RelationRow(entity_key(source), entity_key(target), relation, key, chunk_id))
    result.entities = list(entities.values())
    return result


def disagreeing() -> list[Doc]:
    """Two documents that give one entity key different names, types and aliases."""
    one, two = doc("one", ("Person:Priya", "USES", "Product:Acme")), doc(
        "two", ("Person:Priya", "USES", "Organization:Acme"))
    one.entities = [EntityRow("Entity:acme", "ACME", "Product", ("Acme Corp",))
                    if e.key == "Product:acme" else e for e in one.entities]
    two.entities = [EntityRow("Entity:acme", "Acme", "Organization", ("Acme Inc.",))
                    if e.key == "Organization:acme" else e for e in two.entities]
    for d in (one, two):
        d.mentions = [Mention(m.chunk_id, "Entity:acme") if "acme" in m.entity_key else m
                      for m in d.mentions]
        d.relationships = [r.__class__(r.source_key, "Entity:acme", r.type, r.document_key,
                                       r.chunk_id) for r in d.relationships]
    return [one, two]
