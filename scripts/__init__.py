"""Glue command-line tools run by the make targets."""
