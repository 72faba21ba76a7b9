"""Nearest chunks through the vector index, with their document, entities and the
entities' one-hop neighbours (from any document)."""

import math
import random
import string

import neo4j
import pytest

from resources.llm.offline.analytics import embed
from resources.neo4j import (
    ChunkRow,
    DocumentRow,
    GraphWriter,
    Neighbour,
    delete_all,
    drop_schema,
    nearest_chunks,
)
from tests.graph.corpus import doc, embedding


def test_the_nearest_chunk_comes_first_with_its_graph_context(graph: GraphWriter):
    alpha = doc("alpha",
                ("Person:Priya Raman", "WORKS_FOR", "Organization:Acme"),
                ("Organization:Acme", "USES", "Product:Okta"),
                ("Person:Marcus Feld", "REPORTED", "Event:Export Timeout"))
    beta = doc("beta", ("Person:Marcus Feld", "FIXED", "Event:Export Timeout"),
               ("Organization:Acme", "LOCATED_IN", "Location:Dublin"))
    alpha.write(graph)
    beta.write(graph)

    for target in alpha.chunks + beta.chunks:
        query = [x + 0.01 for x in embedding(target.text)]  # near, not equal
        results = nearest_chunks(graph.driver, query, k=3)
        assert results[0].chunk_id == target.id
        assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
        assert len(results) == 3

    [okta_chunk] = nearest_chunks(graph.driver, embedding(alpha.chunks[1].text), k=1)
    assert (okta_chunk.document_key, okta_chunk.document_title, okta_chunk.document_path) == (
        "alpha", "Alpha", "docs/alpha.md")
    assert okta_chunk.text == "Acme uses Okta."
    assert [e.key for e in okta_chunk.entities] == ["Organization:acme", "Product:okta"]
    acme = okta_chunk.entities[0]
    # Acme's neighbours through typed relationships of both documents, not its chunks
    assert acme.neighbours == (
        Neighbour("Location:dublin", "Dublin", "Location", "LOCATED_IN", True),
        Neighbour("Product:okta", "Okta", "Product", "USES", True),
        Neighbour("Person:priya raman", "Priya Raman", "Person", "WORKS_FOR", False),
    )


def test_deleted_chunks_are_no_longer_found(graph: GraphWriter):
    alpha = doc("alpha", ("Person:Priya Raman", "WORKS_FOR", "Organization:Acme"))
    beta = doc("beta", ("Organization:Acme", "USES", "Product:Okta"))
    alpha.write(graph)
    beta.write(graph)
    graph.delete_document("alpha")
    results = nearest_chunks(graph.driver, embedding(alpha.chunks[0].text), k=5)
    assert [r.chunk_id for r in results] == ["beta#0"]


@pytest.fixture
def wide_graph(neo4j_driver: neo4j.Driver):
    """A writer whose vector index has the offline embeddings' 256 dimensions (the other
    tests' index has 8); the schema is dropped after, for them."""
    delete_all(neo4j_driver)
    drop_schema(neo4j_driver)
    writer = GraphWriter(neo4j_driver)
    writer.ensure_schema(256)
    yield writer
    delete_all(neo4j_driver)
    drop_schema(neo4j_driver)


def test_the_nearest_chunks_are_the_exact_nearest_not_the_index_guess(wide_graph):
    # Texts over one small vocabulary: many chunks at nearly the same distance, where the
    # index alone (a narrow HNSW beam over quantized vectors) misses the nearest often
    rng = random.Random(7)
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
                  for _ in range(300)]
    vectors: dict[str, list[float]] = {}
    for number in range(40):
        key = f"doc{number}"
        texts = [" ".join(rng.choices(vocabulary, k=30)) for _ in range(10)]
        chunks = [ChunkRow(f"{key}#{i}", key, i, text, embed(text))
                  for i, text in enumerate(texts)]
        vectors.update((c.id, c.embedding) for c in chunks)
        wide_graph.replace_document(DocumentRow(key, f"docs/{key}.md", key), chunks, [], [],
                                    [])

    def exact(query: list[float]) -> list[float]:  # Neo4j's cosine scale: (1 + cos) / 2
        norm = math.sqrt(sum(x * x for x in query))
        return sorted(((1 + sum(a * b for a, b in zip(query, v, strict=True)) / norm) / 2
                       for v in vectors.values()), reverse=True)

    for _ in range(100):
        query = embed(" ".join(rng.choices(vocabulary, k=8)))
        for k in (1, 3):
            found = nearest_chunks(wide_graph.driver, query, k=k)
            assert [r.score for r in found] == pytest.approx(exact(query)[:k], abs=1e-4)
