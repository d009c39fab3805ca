"""launch/: cluster YAMLs against Ray's schema, the SLURM script, the KubeRay manifest,
the DeepSpeed JSONs, the run configs and the submit script's helpers."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
CLUSTER_YAMLS = ["rad.yaml", "rad-aws.yaml"]
# Run configs launch/ ships for `rad train` / launch/submit.py, with the GPUs each is sized for.
RUN_CONFIGS = {"tiny.yaml": 0, "medium.yaml": 0, "smoke.yaml": 0, "qwen2.5-0.5b-1gpu.yaml": 1,
               "qwen2.5-1.5b-2gpu.yaml": 2, "qwen2.5-3b-8gpu.yaml": 8}


def load_submit():
    spec = importlib.util.spec_from_file_location("rad_launch_submit", LAUNCH / "submit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


# -- cluster launcher ------------------------------------------------------------------------

@pytest.mark.parametrize("name", CLUSTER_YAMLS)
def test_cluster_yaml_validates_against_the_installed_ray_schema(name):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((LAUNCH / name).read_text())
    jsonschema.validate(raw, ray_schema())
    # What `ray up` does before touching a node: merge defaults, then Ray's own validation.
    validate_config(prepare_config(copy.deepcopy(raw)))


def test_schema_check_catches_a_misspelt_key():
    import jsonschema

    raw = yaml.safe_load((LAUNCH / "rad.yaml").read_text())
    raw["setup_command"] = raw.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_command"):
        jsonschema.validate(raw, ray_schema())


def test_local_variant_brings_the_project_and_starts_ray():
    cfg = yaml.safe_load((LAUNCH / "rad.yaml").read_text())
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and isinstance(cfg["provider"]["worker_ips"], list)
    assert cfg["file_mounts"]["~/rad"] == "."
    assert ".gitignore" in cfg["rsync_filter"]
    setup = "\n".join(cfg["setup_commands"])
    assert 'pip install -q -e "$HOME/rad[gpu]"' in setup and "rad-env/bin/activate" in setup
    head = cfg["head_start_ray_commands"][-1]
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-port=8265" in head  # the job server `ray job submit` talks to
    assert "ray start --address=$RAY_HEAD_IP:6379" in cfg["worker_start_ray_commands"][-1]


def test_cloud_variant_declares_gpu_node_types():
    cfg = yaml.safe_load((LAUNCH / "rad-aws.yaml").read_text())
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    for name, node_type in types.items():
        assert node_type["resources"]["GPU"] > 0, name  # the head trains too (driver-side stages)
        assert node_type["node_config"]["InstanceType"]
    assert sum(t.get("min_workers", 0) for t in types.values()) <= cfg["max_workers"]


@pytest.mark.parametrize("name", CLUSTER_YAMLS)
def test_cluster_yaml_starts_every_node_with_token_auth_and_a_loopback_dashboard(name):
    cfg = yaml.safe_load((LAUNCH / name).read_text())
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts), starts
    head = cfg["head_start_ray_commands"][-1]
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in json.dumps(cfg)  # nothing listens on all interfaces, no rule admits everyone
    # The token made on the launching machine reaches every node at Ray's default path, owner-only.
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "chmod 600 ~/.ray/auth_token" in cfg["setup_commands"]
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in cfg["setup_commands"])


def test_aws_nodes_get_a_security_group_the_user_made_not_rays_default():
    cfg = yaml.safe_load((LAUNCH / "rad-aws.yaml").read_text())
    for name, node_type in cfg["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"], name
    assert "security_group" not in cfg["provider"]  # Ray would add to its default (SSH from anywhere)
    text = (LAUNCH / "rad-aws.yaml").read_text()
    assert "--protocol all --source-group $sg" in text and "--port 22" in text and "checkip.amazonaws.com)/32" in text


# -- SLURM and KubeRay ------------------------------------------------------------------------

def test_slurm_script_is_valid_bash_and_runs_the_submit_script():
    script = LAUNCH / "slurm" / "rad.sbatch"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    for directive in ("--nodes", "--gpus-per-node", "--cpus-per-task", "--time"):
        assert f"#SBATCH {directive}=" in text
    assert "ray start --head" in text and 'ray start --address="$RAY_ADDRESS"' in text
    assert ("export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}" in text
            and "DASHBOARD_HOST=${DASHBOARD_HOST:-127.0.0.1}" in text)
    assert '--dashboard-host="$DASHBOARD_HOST"' in text and "0.0.0.0" not in text.split("#SBATCH", 1)[1]
    assert "umask 077" in text and "export RAY_AUTH_TOKEN_PATH=$job_token" in text
    assert 'python launch/submit.py --config "$CONFIG" "$@"' in text
    default_config = text.split("CONFIG=${CONFIG:-", 1)[1].split("}", 1)[0]
    assert (ROOT / default_config).is_file()


def test_slurm_script_refuses_an_open_dashboard_without_token_auth():
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(ROOT), "RAD_ENV": str(Path(sys.executable).parent.parent),
           "DASHBOARD_HOST": "0.0.0.0", "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run(["bash", str(LAUNCH / "slurm" / "rad.sbatch")], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 2
    assert "DASHBOARD_HOST=0.0.0.0 opens the Jobs API to the network; it needs RAY_AUTH_MODE=token" in result.stderr


def test_slurm_syntax_check_is_not_vacuous(tmp_path):
    broken = tmp_path / "broken.sbatch"
    broken.write_text((LAUNCH / "slurm" / "rad.sbatch").read_text().replace("done\n", "", 1))
    assert subprocess.run(["bash", "-n", str(broken)], capture_output=True).returncode != 0


def test_kuberay_rayjob_has_the_required_fields():
    job = yaml.safe_load((LAUNCH / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:2] == ["python", "launch/submit.py"]
    config = entry[entry.index("--config") + 1]
    assert config in {f"launch/configs/{n}" for n in RUN_CONFIGS}
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    # The operator makes the token (a Secret) and sets it on every pod; an open dashboard only with it.
    assert cluster["authOptions"] == {"mode": "token"}
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"] and head_container["name"]
    # The config's GPUs fit on the head pod (its driver trains SFT / reward / cost there).
    assert int(head_container["resources"]["limits"]["nvidia.com/gpu"]) >= RUN_CONFIGS[Path(config).name]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"][0]["image"]
    mounts = {m["mountPath"] for m in head_container["volumeMounts"]}
    out_dir = next(o.split("=", 1)[1] for o in entry if o.startswith("output_dir="))
    assert any(out_dir.startswith(m + "/") for m in mounts), "the run directory must be on the shared volume"


# -- DeepSpeed ----------------------------------------------------------------------------------

DS_FILES = {"zero2.json": dict(zero_stage=2), "zero2_offload.json": dict(zero_stage=2, offload_optimizer=True),
            "zero3.json": dict(zero_stage=3), "zero3_offload.json": dict(zero_stage=3, offload_optimizer=True,
                                                                          offload_params=True)}


@pytest.mark.parametrize("name", sorted(DS_FILES))
def test_deepspeed_json_is_what_rad_hands_deepspeed(name):
    from deepspeed.runtime.config import DeepSpeedConfig

    from rad.runtime.learner import deepspeed_config
    from rad.settings import LearnerConfig

    data = json.loads((LAUNCH / "deepspeed" / name).read_text())
    parsed = DeepSpeedConfig(copy.deepcopy(data))
    assert parsed.zero_optimization_stage == DS_FILES[name]["zero_stage"]
    assert (parsed.zero_config.offload_optimizer is not None) == DS_FILES[name].get("offload_optimizer", False)
    assert (parsed.zero_config.offload_param is not None) == DS_FILES[name].get("offload_params", False)
    # The learner keys that produce this file (on a GPU: bf16 on, pinned host memory).
    learner = LearnerConfig(micro_batch_size=data["train_micro_batch_size_per_gpu"],
                            grad_accum=data["gradient_accumulation_steps"], grad_clip=data["gradient_clipping"],
                            bf16="true", **DS_FILES[name])
    ours = deepspeed_config(learner, world_size=1)
    for section in ("offload_optimizer", "offload_param"):
        if section in ours["zero_optimization"]:
            ours["zero_optimization"][section]["pin_memory"] = True  # False only because this machine has no GPU
    ours.pop("train_batch_size")  # DeepSpeed derives it from the world size
    assert data == ours


# -- run configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(RUN_CONFIGS))
def test_run_config_loads_and_fits_its_gpus(name):
    from rad.config import from_dict, load_config, to_dict
    from rad.pipeline import PipelineConfig, stage_configs

    cfg = load_config(PipelineConfig, str(LAUNCH / "configs" / name), [])
    for stage, stage_cfg in stage_configs(cfg).items():  # every stage's own validation
        from_dict(type(stage_cfg), to_dict(stage_cfg), prefix=stage)
    gpus = RUN_CONFIGS[name]
    demand = load_submit().rad_stage_demand(cfg, gpu_cluster=gpus > 0)
    assert demand.get("GPU", 0.0) <= gpus
    if gpus:
        assert cfg.rad.rollout.engine == "vllm" and cfg.model.name_or_path.startswith("Qwen/Qwen2.5-")
        text = (LAUNCH / "configs" / name).read_text()
        assert "Memory arithmetic" in text  # the sizing is written beside the config


def test_gpu_demand_counts_tensor_parallel_engines():
    from rad.config import load_config
    from rad.pipeline import PipelineConfig

    path = str(LAUNCH / "configs" / "qwen2.5-3b-8gpu.yaml")
    cfg = load_config(PipelineConfig, path, [])
    submit = load_submit()
    # learners 4 * 0.75 + reference 0.75 + scorers 2 * 0.25 + engines 3 * 1.0
    assert submit.rad_stage_demand(cfg, gpu_cluster=True)["GPU"] == pytest.approx(7.25)
    cfg = load_config(PipelineConfig, path, ["rad.rollout.vllm_tensor_parallel_size=2"])
    assert submit.rad_stage_demand(cfg, gpu_cluster=True)["GPU"] == pytest.approx(10.25)
    assert "GPU" not in submit.rad_stage_demand(load_config(PipelineConfig, str(LAUNCH / "configs" / "tiny.yaml"),
                                                            []), gpu_cluster=False)


# -- submit script ----------------------------------------------------------------------------------

def test_submit_adds_the_cluster_address_unless_given():
    submit = load_submit()
    assert submit.with_address(["seed=1"], "auto") == ["seed=1", "rad.resources.ray_address=auto"]
    given = ["rad.resources.ray_address=10.0.0.1:6379"]
    assert submit.with_address(given, "auto") == given


def test_submit_finds_a_relative_config_in_the_project(tmp_path, monkeypatch):
    from rad.errors import ConfigError

    submit = load_submit()
    monkeypatch.chdir(tmp_path)  # like `ray submit`, which runs the copied script from ~
    assert submit.resolve_config("launch/configs/smoke.yaml") == ROOT / "launch" / "configs" / "smoke.yaml"
    local = tmp_path / "mine.yaml"
    local.write_text("seed: 1\n")
    assert submit.resolve_config("mine.yaml") == Path("mine.yaml")
    with pytest.raises(ConfigError, match="launch/configs/nope.yaml is neither"):
        submit.resolve_config("launch/configs/nope.yaml")


def test_submit_rejects_a_bad_override_before_connecting(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}  # nothing listens there: connecting would fail differently
    result = subprocess.run([sys.executable, str(LAUNCH / "submit.py"), "--config",
                             "launch/configs/smoke.yaml", "sft.learner.lr=-1", f"output_dir={tmp_path}/run"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 2
    assert "sft.learner.lr" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("token_env, needle", [
    ({}, "submit.py: error: ray_address=auto: the cluster needs Ray's auth token and none was found; "
         "set RAY_AUTH_TOKEN to the cluster's token, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in "
         "~/.ray/auth_token"),
    ({"RAY_AUTH_TOKEN_PATH": "/nonexistent/token"},
     "submit.py: error: RAY_AUTH_TOKEN_PATH=/nonexistent/token: cannot read the Ray token there (No such file"),
])
def test_submit_without_the_cluster_token_says_where_to_put_it(tmp_path, token_env, needle):
    from rad.cache import cache_root

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}  # mode unset: token by default
    env.update(HOME=str(tmp_path), RAD_CACHE=str(cache_root()), RAY_ADDRESS="127.0.0.1:1", **token_env)
    result = subprocess.run([sys.executable, str(LAUNCH / "submit.py"), "--config", "launch/configs/smoke.yaml",
                             f"output_dir={tmp_path}/run"], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
