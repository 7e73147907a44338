"""Training speed (issue 9): threads from the cgroup quota, the GPU code paths run on a CPU (mixed
precision, MirroredStrategy, XLA) giving a float32 ONNX model that passes parity, the learning
rate schedule, training read from the decoded cache."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import REPO_ROOT, clean_env

from core.config import load_params
from core.cores import available_cores, cgroup_cpu_limit
from model.devices import DeviceError, configure

IMAGE_SIZE = 32
GPU_PATHS_ON = {"speed.mixed_precision": "on", "speed.mirrored": "on", "speed.xla": "on"}


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("files, proc, limit", [
    ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),
    ({"cpu.max": "max 100000\n"}, "0::/\n", None),
    ({"kubepods/pod1/cpu.max": "400000 100000\n"}, "0::/kubepods/pod1\n", 4.0),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, "4:cpu,cpuacct:/\n", 2.0),
    ({"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/docker/x\n", 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "4:cpu,cpuacct:/\n", None),
    ({"kubepods/cpu.max": "200000 100000\n", "kubepods/pod1/cpu.max": "max 100000\n"}, "0::/kubepods/pod1\n", 2.0),
    ({"cpu.max": "garbage\n"}, "0::/\n", None),
    ({}, "", None),
])
def test_the_cgroup_cpu_quota_is_read_from_v2_and_v1(tmp_path, files, proc, limit):
    for relative, text in files.items():
        write(tmp_path / "cgroup" / relative, text)
    write(tmp_path / "proc-cgroup", proc)
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "proc-cgroup") == limit


def test_threads_follow_the_quota_not_the_host(tmp_path):
    write(tmp_path / "cgroup" / "cpu.max", "100000 100000\n")
    write(tmp_path / "proc-cgroup", "0::/\n")
    assert available_cores(tmp_path / "cgroup", tmp_path / "proc-cgroup") == 1
    write(tmp_path / "cgroup" / "cpu.max", "50000 100000\n")
    assert available_cores(tmp_path / "cgroup", tmp_path / "proc-cgroup") == 1, "at least one thread"
    write(tmp_path / "cgroup" / "cpu.max", "max 100000\n")
    assert available_cores(tmp_path / "cgroup", tmp_path / "proc-cgroup") >= 1


def test_tensorflow_gets_the_available_cores_by_default():
    """In a fresh interpreter: the runtime of this one may have started with other sizes."""
    code = ("from core.config import load_params; from model.devices import available_cores, configure; "
            "p = configure(load_params(environ={})['speed']); "
            "print(p.threads, p.inter_op_threads, available_cores())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=clean_env(TF_CPP_MIN_LOG_LEVEL="3"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    threads, inter, cores = map(int, result.stdout.split()[-3:])
    assert threads == inter == cores


def speed(**overrides) -> dict:
    return {**load_params(environ={})["speed"], **overrides}


def test_auto_turns_the_gpu_paths_on_with_gpus_and_off_without():
    on_cpu = configure(speed(), visible_gpus=0)
    assert (on_cpu.mixed_precision, on_cpu.xla, on_cpu.mirrored, on_cpu.policy) == (False, False, False, "float32")
    on_gpus = configure(speed(), visible_gpus=2)
    assert (on_gpus.mixed_precision, on_gpus.xla, on_gpus.mirrored, on_gpus.policy) == (True, True, True,
                                                                                          "mixed_float16")
    off = configure(speed(mixed_precision="off", xla="off", mirrored="off"), visible_gpus=2)
    assert (off.mixed_precision, off.xla, off.mirrored) == (False, False, False)
    assert configure(speed(mixed_precision=True), visible_gpus=0).mixed_precision, "YAML's bare on is a bool"


@pytest.mark.parametrize("key, value", [("mixed_precision", "float16"), ("accelerator", "tpu"), ("threads", -1)])
def test_unknown_speed_settings_are_refused_by_name(key, value):
    with pytest.raises(DeviceError, match=f"speed.{key}"):
        configure(speed(**{key: value}), visible_gpus=0)


def test_a_mixed_precision_network_has_a_float32_output_and_a_float32_copy():
    from model.devices import float32_copy, is_mixed
    from model.network import build_network

    mixed = build_network(IMAGE_SIZE, 4, speed=speed(mixed_precision="on"))
    assert is_mixed(mixed) and mixed.layers[-1].dtype_policy.name == "float32"
    batch = np.random.default_rng(1).random((4, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    assert mixed.predict(batch, verbose=0).dtype == np.float32
    copy = float32_copy(mixed)
    assert not is_mixed(copy)
    assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), mixed.get_weights()))
    np.testing.assert_allclose(copy.predict(batch, verbose=0), mixed.predict(batch, verbose=0), atol=5e-3)


def test_the_cosine_schedule_warms_up_then_decays_to_zero():
    from model.schedule import ScheduleError, learning_rate

    train = load_params(environ={})["train"]
    rate, callbacks = learning_rate({**train, "epochs": 4, "warmup_epochs": 1, "learning_rate": 0.01}, 10, "val_loss")
    assert callbacks == []
    values = [float(rate(step)) for step in (0, 5, 10, 25, 40)]
    assert values[0] == 0.0 and values[1] == pytest.approx(0.005) and values[2] == pytest.approx(0.01)
    assert values[2] > values[3] > values[4] and values[4] == pytest.approx(0.0, abs=1e-9)
    rate, callbacks = learning_rate({**train, "lr_schedule": "plateau"}, 10, "val_loss")
    assert rate == train["learning_rate"] and {type(c).__name__ for c in callbacks} == {"EarlyStopping",
                                                                                        "ReduceLROnPlateau"}
    with pytest.raises(ScheduleError, match="train.lr_schedule"):
        learning_rate({**train, "lr_schedule": "linear"}, 10, "val_loss")


@pytest.fixture(scope="module")
def gpu_paths_candidate(tiny_dataset, tmp_path_factory, monkeypatch_module):
    """A real training run with mixed precision, MirroredStrategy and XLA forced on this CPU, its
    images read from the decoded cache (decoding them in tf.data fails the run)."""
    import model.tfdata as tfdata
    from model.train import build_candidate

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("tf.data decoded an image the decoded cache holds")

    monkeypatch_module.setattr(tfdata, "image_bytes_to_array", no_decoding)
    work = tmp_path_factory.mktemp("gpu-paths")
    params = load_params(
        {"dataset_uri": str(tiny_dataset), "registry_uri": str(work / "registry"), "cache_dir": str(work / "cache"),
         "data.image_size": IMAGE_SIZE, "data.min_images_per_class": 5, "train.epochs": 2,
         "speed.decoded_cache_min_images": 0, **GPU_PATHS_ON},
        environ={},
    )
    metadata, files = build_candidate(params)
    return params, metadata, files


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_gpu_paths_on_a_cpu_train_and_export_a_float32_onnx_model_that_passes_parity(gpu_paths_candidate):
    params, metadata, files = gpu_paths_candidate
    device = metadata["training"]["device"]
    assert "mixed_float16" in device and "XLA on" in device and "MirroredStrategy" in device
    assert metadata["training"]["epochs_run"] == 2
    assert metadata["onnx"]["parity_max_abs_diff"] <= params["gate"]["max_parity_diff"]
    assert next(c for c in metadata["gate"]["checks"] if c["name"] == "onnx_parity")["passed"]
    graph = onnx.load_from_string(files["model.onnx"]).graph
    float16 = onnx.TensorProto.FLOAT16
    assert all(t.data_type != float16 for t in graph.initializer)
    assert all(a.i != float16 for node in graph.node if node.op_type == "Cast" for a in node.attribute)
    assert graph.input[0].type.tensor_type.elem_type == graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_the_saved_keras_model_of_a_mixed_run_is_float32(gpu_paths_candidate, tmp_path):
    import keras

    from model.devices import is_mixed

    _, _, files = gpu_paths_candidate
    (tmp_path / "model.keras").write_bytes(files["model.keras"])
    model = keras.models.load_model(tmp_path / "model.keras")
    assert not is_mixed(model) and model.distribute_strategy.num_replicas_in_sync == 1
