"""Model acceptance tests: run by the pipelines against a registry version served by the real API."""
