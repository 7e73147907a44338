"""Thin entry points of the make targets and Tekton steps: each parses its options and calls a library."""
