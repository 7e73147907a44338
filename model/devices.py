"""Where and how training computes: threads, GPUs, mixed precision, XLA, MirroredStrategy.

Settings: the ``speed:`` section of params.yaml (``SPEED_THREADS``, ``SPEED_MIXED_PRECISION`` ...).

- Threads: TensorFlow sizes its thread pools by the CPUs the process may be scheduled on, which in
  a container is the host's count; with a CPU limit (a cgroup quota) that many threads are
  throttled. ``speed.threads`` and ``speed.inter_op_threads`` at 0 use :func:`available_cores`
  instead: the CPU affinity, capped by the cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``),
  rounded down (a thread that is throttled stalls the others of its operation), at least 1.
- GPUs: ``speed.accelerator: auto`` uses the GPUs TensorFlow sees; ``cpu`` ignores them.
- ``mixed_precision``, ``xla`` and ``mirrored`` are ``auto`` (on with a GPU, off on a CPU), ``on``
  or ``off``. ``on`` forces the path on a CPU too; the tests use it to run the GPU code paths here.
  Mixed precision computes in float16 with float32 variables and a float32 output layer;
  :func:`float32_copy` gives the float32 model that is exported, so the ONNX model is float32
  whatever trained it. ``mirrored`` trains with ``tf.distribute.MirroredStrategy`` over every
  visible GPU, each taking ``train.batch_size`` images per step (the global batch scales).

:func:`configure` applies TensorFlow's process-wide settings (threads, visible GPUs) and returns a
:class:`Placement` with the decisions, which the caller passes on; this module keeps no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.cores import available_cores

SWITCHES = ("auto", "on", "off")
ACCELERATORS = ("auto", "cpu")
MIXED_POLICY = "mixed_float16"


class DeviceError(ValueError):
    """A ``speed:`` setting has a value this module does not know."""


def _switch(speed: dict, key: str) -> str:
    value = str(speed[key]).lower()
    if value in ("true", "false"):  # YAML 1.1 turns a bare on/off into a bool
        value = "on" if value == "true" else "off"
    if value not in SWITCHES:
        raise DeviceError(f"speed.{key} must be one of {', '.join(SWITCHES)}, got {speed[key]!r}")
    return value


def _decide(switch: str, gpus: int) -> bool:
    return switch == "on" or (switch == "auto" and gpus > 0)


@dataclass
class Placement:
    """What :func:`configure` decided: threads, GPUs, dtype policy, XLA, MirroredStrategy or not."""

    threads: int  # TensorFlow's intra-op threads now (0: its default)
    inter_op_threads: int
    gpus: int
    mixed_precision: bool
    xla: bool
    mirrored: bool

    @property
    def policy(self) -> str:
        return MIXED_POLICY if self.mixed_precision else "float32"

    def strategy(self):
        """A new MirroredStrategy over every visible GPU (the CPU without one), or the default strategy.

        Build the model in its scope: Keras trains a model with the strategy it was built under.
        """
        import tensorflow as tf

        if not self.mirrored:
            return tf.distribute.get_strategy()
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(self.gpus)] or ["/cpu:0"])

    def describe(self) -> str:
        device = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        return (f"{device}, {self.threads or 'default'} intra-op / {self.inter_op_threads or 'default'} inter-op "
                f"threads, {self.policy}, XLA {'on' if self.xla else 'off'}, "
                f"{'MirroredStrategy' if self.mirrored else 'no distribution strategy'}")


def check(speed: dict) -> None:
    """Refuse unknown values early, with the setting's name."""
    accelerator = str(speed["accelerator"]).lower()
    if accelerator not in ACCELERATORS:
        raise DeviceError(f"speed.accelerator must be one of {', '.join(ACCELERATORS)}, got {speed['accelerator']!r}")
    for key in ("mixed_precision", "xla", "mirrored"):
        _switch(speed, key)
    for key in ("threads", "inter_op_threads"):
        if int(speed[key]) < 0:
            raise DeviceError(f"speed.{key} must be >= 0 (0: automatic), got {speed[key]}")


def set_threads(intra: int, inter: int) -> tuple[int, int]:
    """Size TensorFlow's thread pools (0 leaves one as it is); return the sizes now in force.

    TensorFlow accepts this only before its runtime starts: a later call (a second model in one
    process, a model loaded first) keeps the sizes already in force.
    """
    import tensorflow as tf

    threading = tf.config.threading
    for getter, wanted, setter in ((threading.get_intra_op_parallelism_threads, intra,
                                    threading.set_intra_op_parallelism_threads),
                                   (threading.get_inter_op_parallelism_threads, inter,
                                    threading.set_inter_op_parallelism_threads)):
        if wanted and getter() != wanted:
            try:
                setter(wanted)
            except RuntimeError:
                pass
    return threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()


def configure(speed: dict, visible_gpus: int | None = None) -> Placement:
    """Apply ``speed`` (threads, which GPUs are visible) and decide precision, XLA and distribution.

    Calling it again with the same settings changes nothing. ``visible_gpus`` is for tests: the
    number of GPUs to decide for, instead of asking TensorFlow.
    """
    import tensorflow as tf

    check(speed)
    cores = available_cores()
    threads, inter = set_threads(int(speed["threads"]) or cores, int(speed["inter_op_threads"]) or cores)
    if visible_gpus is None:
        gpus = tf.config.list_physical_devices("GPU")
        if str(speed["accelerator"]).lower() == "cpu" and gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:  # the runtime is up: the GPUs stay visible, but none is used
                pass
            gpus = []
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass
        visible_gpus = len(gpus)
    return Placement(
        threads=threads,
        inter_op_threads=inter,
        gpus=visible_gpus,
        mixed_precision=_decide(_switch(speed, "mixed_precision"), visible_gpus),
        xla=_decide(_switch(speed, "xla"), visible_gpus),
        mirrored=_decide(_switch(speed, "mirrored"), visible_gpus),
    )


def is_mixed(model) -> bool:
    """Whether any layer of ``model`` computes in float16."""
    return any(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float16" for layer in model.layers)


def float32_copy(model):
    """The same network and weights, float32 everywhere, outside any strategy: what is exported.

    Mixed precision keeps float32 variables, so the weights carry over exactly. Call it outside a
    strategy's scope (``fit`` enters scopes only to build and to compile).
    """
    import keras

    def float32_layer(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    return copy
