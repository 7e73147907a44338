"""The learning rate over training (``train.lr_schedule``).

- ``cosine`` (the default): a linear warm-up over ``train.warmup_epochs`` to ``train.learning_rate``,
  then a cosine decay to zero at the last of ``train.epochs``. Every run is the same length, and
  the weights of the last epoch are the model: the decay ends where the model is best, and there is
  no early stopping to end a run on a noisy validation epoch.
- ``plateau``: the earlier schedule: the rate halved after ``early_stopping_patience / 2`` epochs
  without improvement of the validation loss, training stopped after ``early_stopping_patience``,
  and the best epoch's weights restored.
"""

from __future__ import annotations

SCHEDULES = ("cosine", "plateau")


class ScheduleError(ValueError):
    """``train.lr_schedule`` names no known schedule."""


def learning_rate(train: dict, steps_per_epoch: int, monitor: str):
    """``(learning rate or schedule, callbacks)`` for ``keras.Model.compile`` and ``fit``."""
    import keras

    name = train["lr_schedule"]
    if name not in SCHEDULES:
        raise ScheduleError(f"train.lr_schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    peak = train["learning_rate"]
    if name == "plateau":
        patience = train["early_stopping_patience"]
        return peak, [
            keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, patience // 2)),
        ]
    total = max(1, train["epochs"] * steps_per_epoch)
    warmup = min(train["warmup_epochs"] * steps_per_epoch, total - 1)
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total), []
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total - warmup, warmup_target=peak, warmup_steps=warmup), []
