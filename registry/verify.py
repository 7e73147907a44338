"""Check that a model can be served before production points at it."""

from __future__ import annotations

from registry.store import PromotionRefused


def verify_servable(version: str, model_bytes: bytes, metadata: dict) -> None:
    """Load the model as the API would (sha256 against the metadata, onnxruntime session, a warm-up
    prediction); raise PromotionRefused saying why when that fails."""
    from core.predictor import ModelUnusable, Predictor  # onnxruntime is only loaded when promoting

    try:
        Predictor(model_bytes, metadata, intra_op_threads=1).warm_up()
    except ModelUnusable as exc:
        raise PromotionRefused(f"{version} cannot be served, so production was not changed: {exc}") from exc
