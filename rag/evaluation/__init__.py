"""Retrieval and answer evaluation on BEIR-format data sets."""
