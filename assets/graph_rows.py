"""One document's rows for the graph writer, from its stored chunks, embeddings and
extraction (no I/O): the extracted entities resolved (resources/graph_resolution.py, a pure
function), mentions and relationships tied to the resolved keys, sorted."""

import json

import pandas as pd

from resources.graph_resolution import EntityMention, resolve_entities
from resources.neo4j.model import ChunkRow, DocumentRow, EntityRow, Mention, RelationRow


def document_graph(document: DocumentRow, chunks: pd.DataFrame, embeddings: pd.DataFrame,
                   extraction: pd.DataFrame) -> tuple[dict, dict[str, int]]:
    """The writer's rows for one document, and counts of what resolution dropped or
    remapped. Chunks whose extraction failed still become nodes, without entities."""
    vectors = dict(zip(embeddings["chunk_id"], embeddings["embedding"], strict=True))
    per_chunk = {cid: (json.loads(entities), json.loads(relationships))
                 for cid, entities, relationships, error_class in zip(
                     extraction["chunk_id"], extraction["entities"],
                     extraction["relationships"], extraction["error_class"], strict=True)
                 if pd.isna(error_class)}
    resolution = resolve_entities(
        EntityMention(e["name"], e["type"], tuple(e["aliases"]))
        for entities, _ in per_chunk.values() for e in entities)
    mentions, relations, unresolved = set(), set(), 0
    for chunk_id, (entities, relationships) in per_chunk.items():
        for entity in entities:
            if key := resolution.key_for(entity["name"]):
                mentions.add(Mention(chunk_id, key))
        for rel in relationships:
            source, target = resolution.key_for(rel["source"]), resolution.key_for(rel["target"])
            if source is None or target is None or source == target:
                unresolved += 1  # names no entity of the document carries, or a self-loop
                continue
            relations.add(RelationRow(source, target, rel["type"], document.key, chunk_id))
            mentions.add(Mention(chunk_id, source))
            mentions.add(Mention(chunk_id, target))
    rows = {
        "document": document,
        "chunks": [ChunkRow(c.chunk_id, document.key, int(c.chunk_index), c.text,
                            _vector(vectors.get(c.chunk_id))) for c in chunks.itertuples()],
        "entities": [EntityRow(e.key, e.name, e.type, e.aliases) for e in resolution.entities],
        "mentions": sorted(mentions, key=lambda m: (m.chunk_id, m.entity_key)),
        "relationships": sorted(relations, key=lambda r: (r.source_key, r.target_key, r.type,
                                                          r.chunk_id)),
    }
    return rows, {"relations_unresolved": unresolved, "names_dropped": resolution.dropped,
                  "entity_types_remapped": resolution.remapped_types}


def _vector(value) -> list[float] | None:
    return None if value is None else [float(x) for x in value]
