"""Cluster profiles: every shipped profile loads; extends; validation errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch.planning.profiles import PROFILE_DIR, expand_path, format_minutes, list_profiles, load_profile, parse_time_limit
from memorymodels.configuration import ConfigError

SHIPPED = ["a100x4", "a100x8", "h100x2", "h100x8", "local", "local-slurm", "local-slurm-2node", "v100x2", "v100x4",
           "v100x8"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


BASE = """gpu_type: V100
gpus_per_node: 8
precision: fp16
data_root: /data
checkpoint_root: /ckpt
"""


def test_every_shipped_profile_loads():
    assert set(SHIPPED) <= set(list_profiles())
    for name in list_profiles():
        profile = load_profile(name)
        assert profile.name == name and profile.description
        assert profile.procs_per_node >= 1 and profile.time_minutes >= 1


def test_shipped_hardware_and_precision():
    assert [load_profile(n).gpus_per_node for n in ("v100x2", "v100x4", "v100x8")] == [2, 4, 8]
    assert {load_profile(n).precision for n in ("v100x2", "v100x4", "v100x8")} == {"fp16"}
    assert {load_profile(n).precision for n in ("a100x4", "a100x8", "h100x2", "h100x8")} == {"bf16"}
    local = load_profile("local")
    assert local.executor == "local" and local.checkpoint_root == "runs" and local.backend == "gloo"
    two = load_profile("local-slurm-2node")
    assert (two.nodes, two.procs_per_node, two.partition, two.extends) == (2, 2, "multinode", "local-slurm")


def test_extends_merges_and_keeps_child_keys():
    v4 = load_profile("v100x4")
    v8 = load_profile("v100x8")
    assert v4.extends == "v100x8" and v4.gpus_per_node == 4
    assert (v4.cpus_per_gpu, v4.mem_per_gpu_gb, v4.partition, v4.precision) == (
        v8.cpus_per_gpu, v8.mem_per_gpu_gb, v8.partition, v8.precision)
    assert v4.description != v8.description  # descriptions are not inherited


def test_extends_a_path_and_a_loop(tmp_path):
    write(tmp_path, "base", BASE)
    child = write(tmp_path, "child", "extends: base.yaml\ngpus_per_node: 2\n")
    assert load_profile(child).gpus_per_node == 2
    write(tmp_path, "a", "extends: b.yaml\n")
    write(tmp_path, "b", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_profile(tmp_path / "a.yaml")


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_profile("v100x9")
    message = str(err.value)
    assert "unknown profile 'v100x9'" in message and "did you mean 'v100x8'" in message
    for name in SHIPPED:
        assert name in message


def test_unknown_key_names_file_and_closest(tmp_path):
    path = write(tmp_path, "typo", BASE + "gpus_per_nod: 4\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and "'gpus_per_nod'" in str(err.value)
    assert "did you mean 'gpus_per_node'" in str(err.value)


def test_bf16_on_v100_is_refused_with_file_and_key():
    with pytest.raises(ConfigError) as err:
        load_profile("v100x8", ["precision=bf16"])
    assert str(err.value).startswith("cluster_profiles/v100x8.yaml")
    assert "'precision: bf16' is not supported by V100 GPUs; use fp16" in str(err.value)


@pytest.mark.parametrize("override, words", [
    ("gpus_per_node=17", "'gpus_per_node: 17' is impossible for V100"),
    ("gpus_per_node=0", "'gpus_per_node: 0' is impossible"),
    ("nodes=0", "'nodes: 0' must be 1 or more"),
    ("gpu_type=K80", "'gpu_type: K80' is not a known GPU"),
    ("checkpoint_root=", "'checkpoint_root' is missing"),
    ("data_root=' '", "'data_root' is missing"),
    ("time_limit=soon", "'time_limit': 'soon' is not a time limit"),
    ("signal_before_end_s=100000", "'signal_before_end_s: 100000' is not shorter than"),
    ("processes_per_node=3", "must equal 'gpus_per_node: 8'"),
    ("launcher=horovod", "'launcher'"),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_profile("v100x8", [override])
    assert words in str(err.value)
    assert "cluster_profiles/v100x8.yaml" in str(err.value)


def test_cpu_profiles_refuse_gpu_only_settings():
    with pytest.raises(ConfigError, match="'launcher: fsdp' needs GPUs"):
        load_profile("local-slurm", ["launcher=fsdp"])
    with pytest.raises(ConfigError, match="'gpus_per_node: 2' needs 'gpu_type'"):
        load_profile("local-slurm", ["gpus_per_node=2"])
    with pytest.raises(ConfigError, match="'precision: fp16' needs GPUs"):
        load_profile("local-slurm", ["precision=fp16"])
    with pytest.raises(ConfigError, match="'nodes: 2' is impossible with 'executor: local'"):
        load_profile("local", ["nodes=2"])


def test_name_is_not_a_key(tmp_path):
    with pytest.raises(ConfigError, match="'name' is set from the file name"):
        load_profile(write(tmp_path, "named", BASE + "name: other\n"))


@pytest.mark.parametrize("text, minutes", [("90m", 90), ("24h", 1440), ("2d", 2880), ("1d12h", 2160),
                                           ("45s", 1), ("30", 30), ("02:30:00", 150), ("1-00:00:00", 1440),
                                           ("10:30", 11), ("1.5h", 90)])
def test_time_limits(text, minutes):
    assert parse_time_limit(text) == minutes


def test_format_minutes():
    assert format_minutes(1500) == "1-01:00:00" and format_minutes(90) == "01:30:00"


def test_expand_path_variables_defaults_and_unset(monkeypatch):
    env = {"SCRATCH": "/scratch/me"}
    assert expand_path("$SCRATCH/runs", where="w", environ=env) == Path("/scratch/me/runs")
    assert expand_path("${CHECKPOINT_ROOT:-/tmp/x}/r", where="w", environ=env) == Path("/tmp/x/r")
    assert expand_path("runs", where="w", environ=env, base=Path("/repo")) == Path("/repo/runs")
    with pytest.raises(ConfigError) as err:
        expand_path("$NOPE/runs", where="cluster_profiles/x.yaml: checkpoint_root", environ=env)
    assert "cluster_profiles/x.yaml: checkpoint_root uses $NOPE, which is not set" in str(err.value)


def test_profile_files_have_no_stray_keys():
    # every file loads on its own, so a typo in a shipped file would have failed above; here: no file is unused
    assert sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")) == list_profiles()
