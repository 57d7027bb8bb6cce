"""Loupe's core: embeddings, the FAISS store, retrieval and grounded answers."""
