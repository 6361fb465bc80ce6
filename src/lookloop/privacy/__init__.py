"""Redaction and encryption at rest: faces, personal text, frame keys."""
