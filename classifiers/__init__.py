"""Distilled fastText classifiers (quality and topics), reusable on any text."""
