"""Telling the product owner: the report of a version (text and HTML), the emails, and the outcome a step noted."""
