"""What one write of many documents sends to Neo4j, in write order (no I/O).

Given what each document of a batch should contribute (a Contribution, or None to remove
it) and what it contributes in the database now (`Held`), `plan_changes` merges the rows of
all documents and sorts each list by key across documents, so that concurrent writers lock
shared nodes in one order: documents, chunks, entities with their mentions, relationships;
then what each document no longer asserts, orphan candidates, entities to refresh, and the
documents to remove. Replacing documents together therefore leaves the graph that
replacing them one after another would.

An entity mentioned by several documents of the batch becomes one row: Cypher applies a
statement clause by clause over all its rows, so two rows of one key in one UNWIND would
each read the node before either wrote it, and the last would win. The merged row carries
the smallest name, the type earliest in the allowlist and every spelling as an alias (what
writing them in sequence gives), and each mention keeps the spelling its document gave.
"""

from collections import defaultdict
from dataclasses import dataclass

from resources.neo4j.contribution import (
    TYPE_RANK,
    Contribution,
    InvalidContribution,
    RelationshipId,
    relationship_id,
)


@dataclass(frozen=True)
class Held:
    """What a document contributes in the database right now."""

    document_key: str
    chunk_ids: set[str]
    mentions: set[tuple[str, str]]  # (chunk id, entity key)
    relationships: set[RelationshipId]

    @property
    def rows(self) -> int:
        return len(self.chunk_ids) + len(self.mentions) + len(self.relationships)


@dataclass(frozen=True)
class Changes:
    documents: list[dict]  # UPSERT_DOCUMENTS rows
    chunks: list[dict]
    entities: list[dict]  # UPSERT_ENTITIES_WITH_MENTIONS rows, one per key, with mentions
    relationships: list[dict]
    stale_relationships: list[dict]
    stale_mentions: list[dict]
    stale_chunks: list[str]
    orphan_candidates: list[str]
    refresh: list[str]  # entities whose properties must be recomputed from their mentions
    deleted_documents: list[str]
    remapped_labels: int
    remapped_relationship_types: int


def plan_changes(new: dict[str, Contribution | None], held: dict[str, Held]) -> Changes:
    written = [c for c in new.values() if c is not None]
    _check_chunks_are_their_own(written)
    stale: dict[str, list] = defaultdict(list)
    for key, contribution in new.items():
        _stale(held[key], contribution, stale)
    return Changes(
        documents=sorted(({"key": c.document.key, "path": c.document.path,
                           "title": c.document.title} for c in written),
                         key=lambda d: d["key"]),
        chunks=sorted((row for c in written for row in c.chunks), key=lambda r: r["id"]),
        entities=_merged_entities(written, held),
        relationships=sorted((row for c in written for row in c.relationships
                              if relationship_id(row) not in held[c.document.key].relationships),
                             key=relationship_id),
        stale_relationships=sorted(stale["relationships"],
                                   key=lambda r: (relationship_id(r), r["document_key"])),
        stale_mentions=sorted(stale["mentions"],
                              key=lambda m: (m["chunk_id"], m["entity_key"])),
        stale_chunks=sorted(stale["chunks"]),
        orphan_candidates=sorted(set(stale["orphans"])),
        refresh=sorted(set(stale["refresh"])),
        deleted_documents=sorted(k for k, c in new.items() if c is None),
        remapped_labels=sum(c.remapped_labels for c in written),
        remapped_relationship_types=sum(c.remapped_relationship_types for c in written),
    )


def _check_chunks_are_their_own(written: list[Contribution]) -> None:
    # Chunk ids are derived from the document key, so this is a caller's bug; written
    # together, one document's clean-up would delete the other's chunk.
    owner: dict[str, str] = {}
    for contribution in written:
        for chunk in contribution.chunks:
            other = owner.setdefault(chunk["id"], contribution.document.key)
            if other != contribution.document.key:
                raise InvalidContribution(f"chunk {chunk['id']!r} is given by documents "
                                          f"{other!r} and {contribution.document.key!r}")


def _merged_entities(written: list[Contribution], held: dict[str, Held]) -> list[dict]:
    given: dict[str, list[tuple[dict, Held]]] = defaultdict(list)
    for contribution in written:
        for entity in contribution.entities:
            given[entity["key"]].append((entity, held[contribution.document.key]))
    rows = []
    for key in sorted(given):
        rows_of_key = [e for e, _ in given[key]]
        mentions: dict[str, list[dict]] = {"new_mentions": [], "held_mentions": []}
        for entity, current in given[key]:
            for chunk in entity["chunk_ids"]:
                # One the document held is merged (its spelling may change); a new one is
                # created: only its document's writer writes a mention from its chunk.
                mentions["held_mentions" if (chunk, key) in current.mentions
                         else "new_mentions"].append(
                    {"chunk_id": chunk, "name": entity["name"], "type": entity["type"],
                     "aliases": entity["aliases"]})
        rows.append({
            "key": key,
            "name": min(e["name"] for e in rows_of_key),
            "type": min((e["type"] for e in rows_of_key), key=TYPE_RANK.__getitem__),
            "aliases": sorted({a for e in rows_of_key for a in (*e["aliases"], e["name"])}),
            **{kind: sorted(rows, key=lambda m: m["chunk_id"])
               for kind, rows in mentions.items()},
        })
    return rows


def _stale(current: Held, new: Contribution | None, stale: dict[str, list]) -> None:
    """What `current` holds that `new` no longer asserts, added to `stale`."""
    keep_chunks = new.chunk_ids if new else set()
    keep_mentions = new.mentions if new else set()
    keep_entities = new.entity_keys if new else set()
    relationships = current.relationships - (new.relationship_ids if new else set())
    stale["relationships"] += [
        {"source_key": s, "target_key": t, "type": kind, "chunk_id": chunk,
         "document_key": current.document_key} for s, t, kind, chunk in relationships]
    chunks = current.chunk_ids - keep_chunks
    stale["chunks"] += chunks
    # Mentions of deleted chunks go with them (DETACH DELETE).
    mentions = [{"chunk_id": c, "entity_key": e} for c, e in current.mentions - keep_mentions
                if c in keep_chunks]
    stale["mentions"] += mentions
    mentioned = {e for _, e in current.mentions}
    orphans = mentioned - keep_entities
    stale["orphans"] += orphans
    # Entities this document mentioned before may have had spellings only it gave.
    if mentions or chunks or orphans:
        stale["refresh"] += mentioned


def mention_count(entity_rows: list[dict]) -> int:
    """The mentions a batch of entity rows writes (what the statement must report)."""
    return sum(len(row["new_mentions"]) + len(row["held_mentions"]) for row in entity_rows)
