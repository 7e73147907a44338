"""Continuous training: fine-tune the production (or newest tested) model on the current dataset."""
