"""Clients and stores for the systems docgraph talks to: files, storage, tokenizer."""
