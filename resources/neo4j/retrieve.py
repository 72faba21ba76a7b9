"""Graph-augmented retrieval: the chunks nearest a query vector, through the vector index,
with each chunk's document, the entities it mentions and their one-hop neighbours."""

from dataclasses import dataclass

import neo4j

from resources.neo4j import cypher


@dataclass(frozen=True)
class Neighbour:
    key: str
    name: str
    type: str
    relationship: str
    outgoing: bool  # True: (entity)-[relationship]->(neighbour)


@dataclass(frozen=True)
class RetrievedEntity:
    key: str
    name: str
    type: str
    aliases: tuple[str, ...]
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    index: int
    text: str
    score: float  # cosine similarity mapped to [0, 1] by Neo4j; higher is nearer
    document_key: str
    document_title: str | None
    document_path: str
    entities: tuple[RetrievedEntity, ...]


# How many chunks the vector index proposes at least, for the exact ranking to pick k
# from: with 256-dimension embeddings over 400 chunks, asking the index for the single
# nearest missed it 79 times in 200 queries; 100 candidates, ranked exactly, never did.
MIN_CANDIDATES = 100


def nearest_chunks(driver: neo4j.Driver, vector: list[float], k: int = 5,
                   neighbour_limit: int = 25, database: str | None = None
                   ) -> list[RetrievedChunk]:
    """The k chunks nearest `vector` by exact cosine, among those the index proposes."""
    records, _, _ = driver.execute_query(
        cypher.NEAREST_CHUNKS, k=k, candidates=max(MIN_CANDIDATES, 4 * k),
        vector=[float(x) for x in vector],
        neighbour_limit=neighbour_limit, database_=database, routing_=neo4j.RoutingControl.READ)
    return [
        RetrievedChunk(
            chunk_id=r["chunk_id"], index=r["index"], text=r["text"], score=r["score"],
            document_key=r["document_key"], document_title=r["document_title"],
            document_path=r["document_path"],
            entities=tuple(
                RetrievedEntity(key=e["key"], name=e["name"], type=e["type"],
                                aliases=tuple(e["aliases"] or ()),
                                neighbours=tuple(Neighbour(**n) for n in e["neighbours"]))
                for e in r["entities"]),
        )
        for r in records
    ]
