"""Loupe's ingestion: reading files, OCR, chunking, and feeding a knowledge base."""
