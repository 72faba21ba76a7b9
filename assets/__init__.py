"""Asset families, one module each: documents (ingestion) and chunks so far."""
