"""Every Cypher statement of the project, in one place, with parameters only.

Labels and relationship types come only from the allowlists in model.py, built into the
statements here once, at import time: one `FOREACH` branch per allowed label or type,
chosen by comparing a row's value to a literal, or (the relationship MERGE) a dynamic
type `$(…)` behind a filter on the allowlist's literals. Text from a model only ever
travels as a parameter value; nothing at run time is formatted into a query.

Graph model:
  (:Document {key, path, title})-[:HAS_CHUNK]->(:Chunk {id, document_key, index, text,
  embedding})-[:MENTIONS]->(:Entity:<Type> {key, name, type, aliases})
  (:Entity)-[:<TYPE> {document_key, chunk_id}]->(:Entity)
"""

from resources.neo4j.model import ENTITY_TYPES, RELATION_TYPES

VECTOR_INDEX = "chunk_embedding"


def _when(column: str, value: str, action: str) -> str:
    # `value` is from the allowlist (checked below), never from a row.
    return f"FOREACH (_ IN CASE WHEN {column} = '{value}' THEN [1] ELSE [] END | {action})"


def _identifier(name: str) -> str:
    if not name.isidentifier() or not name.isascii():
        raise ValueError(f"not a safe label or relationship type: {name!r}")
    return name


for _name in ENTITY_TYPES + RELATION_TYPES:
    _identifier(_name)

# -- schema ------------------------------------------------------------------------------
SCHEMA = (
    "CREATE CONSTRAINT document_key IF NOT EXISTS FOR (d:Document) REQUIRE d.key IS UNIQUE",
    "CREATE CONSTRAINT chunk_id IF NOT EXISTS FOR (c:Chunk) REQUIRE c.id IS UNIQUE",
    "CREATE CONSTRAINT entity_key IF NOT EXISTS FOR (e:Entity) REQUIRE e.key IS UNIQUE",
    "CREATE INDEX entity_type IF NOT EXISTS FOR (e:Entity) ON (e.type)",
    "CREATE INDEX chunk_document_key IF NOT EXISTS FOR (c:Chunk) ON (c.document_key)",
    # A document's relationships are found (and replaced) through these.
    *(f"CREATE INDEX {t.lower()}_document_key IF NOT EXISTS "
      f"FOR ()-[r:{t}]-() ON (r.document_key)" for t in RELATION_TYPES),
)

CREATE_VECTOR_INDEX = f"""
CREATE VECTOR INDEX {VECTOR_INDEX} IF NOT EXISTS FOR (c:Chunk) ON (c.embedding)
OPTIONS {{indexConfig: {{`vector.dimensions`: $dimensions,
                        `vector.similarity_function`: 'cosine'}}}}
"""

CHUNK_VECTOR_INDEXES = """
SHOW VECTOR INDEXES YIELD name, labelsOrTypes, properties, options, state
WHERE labelsOrTypes = ['Chunk'] AND properties = ['embedding']
RETURN name, options.indexConfig.`vector.dimensions` AS dimensions, state
"""

AWAIT_INDEXES = "CALL db.awaitIndexes($seconds)"

# For tests and benchmarks that start from nothing (the names are those created above).
DROP_SCHEMA = tuple(
    f"DROP {kind} {name} IF EXISTS"
    for kind, name in [(statement.split()[1], statement.split()[2]) for statement in SCHEMA]
    + [("INDEX", VECTOR_INDEX)]
)

# -- writes --------------------------------------------------------------------------------
UPSERT_DOCUMENTS = """
UNWIND $rows AS row
MERGE (d:Document {key: row.key})
SET d.path = row.path, d.title = row.title
"""

UPSERT_CHUNKS = """
UNWIND $rows AS row
MATCH (d:Document {key: row.document_key})
MERGE (c:Chunk {id: row.id})
SET c.document_key = row.document_key, c.index = row.index, c.text = row.text,
    c.embedding = row.embedding
MERGE (d)-[:HAS_CHUNK]->(c)
RETURN count(*) AS written
"""

# An entity and the batch's mentions of it (each with the spelling its document gave) are
# written in one transaction, so another writer's orphan clean-up either sees the mention
# or has already removed the node (and this batch then fails with EntityNotFound and is
# retried; see store.py). One row per key (changes.py merges documents' rows).
# Shared entities keep order-independent properties: the type earliest in the allowlist,
# the smallest name, and every other spelling as an alias. Any write order (sequential
# or concurrent) therefore gives the same node.
_ALL_TYPE_LABELS = ":".join(ENTITY_TYPES)
UPSERT_ENTITIES_WITH_MENTIONS = f"""
UNWIND $rows AS row
MERGE (e:Entity {{key: row.key}})
WITH e, row, e.type AS old_type, e.name AS old_name,
     CASE WHEN e.type IS NULL OR $type_rank[row.type] < $type_rank[e.type]
          THEN row.type ELSE e.type END AS type,
     CASE WHEN e.name IS NULL OR row.name < e.name THEN row.name ELSE e.name END AS name
FOREACH (_ IN CASE WHEN old_type IS NOT NULL AND old_type <> type THEN [1] ELSE [] END |
  REMOVE e:{_ALL_TYPE_LABELS})
{chr(10).join(_when("type", t, f"SET e:{t}") for t in ENTITY_TYPES)}
SET e.type = type, e.name = name
WITH e, row, old_name
CALL (e, row, old_name) {{
  UNWIND coalesce(e.aliases, []) + row.aliases + [row.name, old_name] AS alias
  WITH DISTINCT e, alias
  WHERE alias IS NOT NULL AND alias <> e.name
  ORDER BY alias
  RETURN collect(alias) AS aliases
}}
SET e.aliases = aliases
WITH e, row
// A mention the document did not hold is created (nothing to match); one it held keeps
// its relationship, rewritten only if its spelling changed (a re-run rewrites nothing).
CALL (e, row) {{
  UNWIND row.new_mentions AS mention
  MATCH (c:Chunk {{id: mention.chunk_id}})
  CREATE (c)-[:MENTIONS {{name: mention.name, type: mention.type,
                          aliases: mention.aliases}}]->(e)
  RETURN count(*) AS created
}}
CALL (e, row) {{
  UNWIND row.held_mentions AS mention
  MATCH (c:Chunk {{id: mention.chunk_id}})
  MERGE (c)-[m:MENTIONS]->(e)
  FOREACH (_ IN CASE WHEN m.name IS NULL OR m.name <> mention.name OR m.type <> mention.type
                      OR m.aliases <> mention.aliases THEN [1] ELSE [] END |
    SET m.name = mention.name, m.type = mention.type, m.aliases = mention.aliases)
  RETURN count(*) AS kept
}}
RETURN sum(created + kept) AS written
"""

# After a document's mentions are gone, what the entities it mentioned still are, from the
# mentions left (each mention keeps the spelling its document gave): the same properties
# the upsert would give had the removed document never been written. The marker write
# takes the node's lock first, as for orphans below.
REFRESH_ENTITIES = f"""
UNWIND $rows AS key
MATCH (e:Entity {{key: key}})
SET e.refresh_check = true
REMOVE e.refresh_check
WITH e
MATCH (e)<-[m:MENTIONS]-()
WHERE m.name IS NOT NULL
WITH e, collect(m) AS ms
WITH e, ms,
     reduce(t = null, m IN ms | CASE WHEN t IS NULL OR $type_rank[m.type] < $type_rank[t]
                                    THEN m.type ELSE t END) AS type,
     reduce(n = null, m IN ms | CASE WHEN n IS NULL OR m.name < n THEN m.name ELSE n END)
       AS name
FOREACH (_ IN CASE WHEN e.type <> type THEN [1] ELSE [] END | REMOVE e:{_ALL_TYPE_LABELS})
{chr(10).join(_when("type", t, f"SET e:{t}") for t in ENTITY_TYPES)}
SET e.type = type, e.name = name
WITH e, ms
CALL (e, ms) {{
  UNWIND ms AS m
  UNWIND coalesce(m.aliases, []) + [m.name] AS alias
  WITH DISTINCT e, alias
  WHERE alias <> e.name
  ORDER BY alias
  RETURN collect(alias) AS aliases
}}
SET e.aliases = aliases
RETURN count(*) AS refreshed
"""

# A relationship is (source, type, target, chunk_id); the chunk implies the document, so
# only its document's writer ever writes it, and a relationship the document did not hold
# before the write is created, not merged (no search among a hub entity's relationships;
# one it held is left as it is: it has no other property). The type is dynamic (`$(…)`,
# Neo4j 5.26), a fifth faster than one FOREACH branch per type (bench on 50,000 rows), and
# held to the allowlist here too: a row outside it is not written, so the batch's count
# check (store.py) rolls the batch back.
CREATE_RELATIONSHIPS = f"""
UNWIND $rows AS row
WITH row WHERE row.type IN [{", ".join(f"'{r}'" for r in RELATION_TYPES)}]
MATCH (s:Entity {{key: row.source_key}})
MATCH (t:Entity {{key: row.target_key}})
CREATE (s)-[:$(row.type) {{chunk_id: row.chunk_id, document_key: row.document_key}}]->(t)
RETURN count(*) AS written
"""

# -- what documents contribute now ---------------------------------------------------------
# Collected into lists: one record per document and query decodes several times faster in
# the Python driver than a record per row (100,000 relationships: 0.5 s instead of 1.8 s).
# `IN $keys` is an index seek per key, so many documents cost one round trip, not many.
DOCUMENTS_CHUNK_IDS = """
MATCH (c:Chunk) WHERE c.document_key IN $keys
RETURN c.document_key AS key, collect(c.id) AS ids
"""

DOCUMENTS_MENTIONS = """
MATCH (c:Chunk)-[:MENTIONS]->(e:Entity) WHERE c.document_key IN $keys
RETURN c.document_key AS key, collect([c.id, e.key]) AS pairs
"""

# One branch per type so each uses its relationship index on document_key.
DOCUMENTS_RELATIONSHIPS = "\nUNION ALL\n".join(
    f"MATCH (s:Entity)-[r:{t}]->(t:Entity) WHERE r.document_key IN $keys "
    f"RETURN r.document_key AS key, '{t}' AS type, collect([s.key, t.key, r.chunk_id]) AS rows"
    for t in RELATION_TYPES
)

# -- removals ------------------------------------------------------------------------------
DELETE_RELATIONSHIPS = """
UNWIND $rows AS row
MATCH (s:Entity {key: row.source_key})-[r]->(t:Entity {key: row.target_key})
WHERE type(r) = row.type AND r.document_key = row.document_key AND r.chunk_id = row.chunk_id
DELETE r
"""

DELETE_MENTIONS = """
UNWIND $rows AS row
MATCH (:Chunk {id: row.chunk_id})-[m:MENTIONS]->(:Entity {key: row.entity_key})
DELETE m
"""

DELETE_CHUNKS = """
UNWIND $rows AS id
MATCH (c:Chunk {id: id})
DETACH DELETE c
"""

# The write (set and remove a marker) takes the node's lock before the check, so a writer
# adding a mention concurrently either committed first (and is seen) or waits for us.
DELETE_ORPHAN_ENTITIES = """
UNWIND $rows AS key
MATCH (e:Entity {key: key})
SET e.orphan_check = true
REMOVE e.orphan_check
WITH e
WHERE NOT EXISTS { (e)<-[:MENTIONS]-() }
DETACH DELETE e
"""

DELETE_DOCUMENTS = """
UNWIND $rows AS key
MATCH (d:Document {key: key})
DETACH DELETE d
"""

# Auto-commit only (session.run): a transaction per batch. Relationships go first, so no
# transaction detaches a hub node's many relationships at once (memory pool limit).
DELETE_ALL = (
    "MATCH ()-[r]->() CALL (r) { DELETE r } IN TRANSACTIONS OF $batch_size ROWS",
    "MATCH (n) CALL (n) { DELETE n } IN TRANSACTIONS OF $batch_size ROWS",
)

# -- reads ---------------------------------------------------------------------------------
EXPORT_NODES = "MATCH (n) RETURN labels(n) AS labels, properties(n) AS properties"

EXPORT_RELATIONSHIPS = """
MATCH (s)-[r]->(t)
RETURN coalesce(s.key, s.id) AS source, type(r) AS type, coalesce(t.key, t.id) AS target,
       properties(r) AS properties
"""

# Copies beyond the first of any key: nodes per (kind, key), relationships per identity.
DUPLICATE_KEYS = """
CALL () {
  MATCH (n) WHERE n:Document OR n:Chunk OR n:Entity
  WITH [l IN labels(n) WHERE l IN ['Document', 'Chunk', 'Entity']] AS kind,
       coalesce(n.key, n.id) AS key, count(*) AS copies
  RETURN sum(copies - 1) AS extra
  UNION ALL
  MATCH (s)-[r]->(t)
  WITH elementId(s) AS s, type(r) AS type, elementId(t) AS t, r.document_key AS document,
       r.chunk_id AS chunk, count(*) AS copies
  RETURN sum(copies - 1) AS extra
}
RETURN sum(extra) AS duplicates
"""

LABELS_IN_USE = "MATCH (n) UNWIND labels(n) AS label RETURN DISTINCT label ORDER BY label"
RELATIONSHIP_TYPES_IN_USE = "MATCH ()-[r]->() RETURN DISTINCT type(r) AS type ORDER BY type"
PROPERTY_KEYS_IN_USE = """
CALL () { MATCH (n) UNWIND keys(n) AS key RETURN key
          UNION MATCH ()-[r]->() UNWIND keys(r) AS key RETURN key }
RETURN key ORDER BY key
"""
CONSTRAINTS = "SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties RETURN * ORDER BY name"
INDEXES = "SHOW INDEXES YIELD name, type, labelsOrTypes, properties RETURN * ORDER BY name"

# Nearest chunks, each with its document, its entities and their one-hop neighbours. The
# index is approximate twice over: HNSW searches with a beam as wide as the k it is asked
# for, and it scores quantized vectors. So it proposes $candidates chunks and the exact
# cosine of the stored embeddings ranks them (same [0, 1] scale as the index's score).
NEAREST_CHUNKS = f"""
CALL db.index.vector.queryNodes('{VECTOR_INDEX}', $candidates, $vector) YIELD node AS c
MATCH (d:Document)-[:HAS_CHUNK]->(c)
WITH d, c, vector.similarity.cosine(c.embedding, $vector) AS score
ORDER BY score DESC, c.id
LIMIT $k
RETURN c.id AS chunk_id, c.index AS index, c.text AS text, score,
       d.key AS document_key, d.title AS document_title, d.path AS document_path,
       COLLECT {{
         MATCH (c)-[:MENTIONS]->(e:Entity)
         WITH e ORDER BY e.key
         RETURN e {{ .key, .name, .type, .aliases,
           neighbours: COLLECT {{
             MATCH (e)-[r]-(n:Entity)
             WITH DISTINCT n, type(r) AS relationship, startNode(r) = e AS outgoing
             ORDER BY relationship, n.key, outgoing
             LIMIT $neighbour_limit
             RETURN {{key: n.key, name: n.name, type: n.type, relationship: relationship,
                     outgoing: outgoing}}
           }}
         }}
       }} AS entities
ORDER BY score DESC, chunk_id
"""

# Diagnostics. EXPLAIN plans a statement without running it.
EXPLAIN_PREFIX = "EXPLAIN "

# Transactions waiting for a lock (tests use it to stage a race).
BLOCKED_TRANSACTIONS = """
SHOW TRANSACTIONS YIELD transactionId, status, currentQuery
WHERE status STARTS WITH 'Blocked'
RETURN transactionId, status, currentQuery
"""
