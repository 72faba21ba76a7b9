import dagster as dg

# One partition per source document; keys come from resources.registry.document_key.
documents_partitions = dg.DynamicPartitionsDefinition(name="documents")
