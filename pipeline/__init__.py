"""Curate web pretraining data with LLM labels: extract, dedup, annotate, distil, classify, rewrite."""

__version__ = "0.1.0"
