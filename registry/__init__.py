"""Model registry: versions in testing and production, the production pointer, the audit log."""

from registry.store import (  # noqa: F401  (the package's public names)
    METADATA_FILE,
    MODEL_FILE,
    PromotionRefused,
    Registry,
    RegistryError,
    VersionNotFound,
    tests_passed,
)
