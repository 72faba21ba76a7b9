"""Nearest chunks through the vector index, with their document, entities and the
entities' one-hop neighbours (from any document)."""

from resources.neo4j import GraphWriter, Neighbour, nearest_chunks
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
