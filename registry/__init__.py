"""Model registry: versions in testing and production, the production pointer, the audit records."""

from registry.policy import Readiness, readiness  # noqa: F401  (the package's public names)
from registry.store import (  # noqa: F401
    KERAS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    ConcurrentChange,
    PromotionRefused,
    Registry,
    RegistryError,
    VersionNotFound,
    tests_passed,
)
