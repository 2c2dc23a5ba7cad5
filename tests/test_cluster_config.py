"""``cluster.yaml``: valid for Ray's own cluster-launcher schema, and locked down by default.

Offline: ``prepare_config`` fills the AWS defaults shipped in the Ray wheel and
``validate_config`` checks the result against the wheel's ``ray-schema.json``.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCS = ROOT / "README.md"  # the cluster flow is documented there
TOKEN_MOUNT = "~/.ray/auth_token"
TOKEN_REMOTE = "$HOME/.ray/auth_token"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return [command for key in keys for command in config.get(key, [])]


def _values(node) -> list[str]:
    """Every string in the parsed config (comments are not configuration)."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [str(key), *_values(value)]]
    if isinstance(node, list):
        return [s for item in node for s in _values(item)]
    return [str(node)]


def _ray_start(commands: list[str]) -> str:
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 1, f"expected one `ray start` command, got {starts}"
    return starts[0]


# -- Ray's validator -----------------------------------------------------------------------------
def test_validates_with_rays_own_schema(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("break_it, error", [
    (lambda c: c.update(max_worker=4), jsonschema.ValidationError),  # typo'd top-level key
    (lambda c: c["available_node_types"]["gpu_worker"].update(  # fractional GPU per node
        resources={"CPU": 4, "GPU": 0.5}), jsonschema.ValidationError),
    (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
     jsonschema.ValidationError),
    (lambda c: c.update(head_node_type="cpu_head"), ValueError),
], ids=["unknown-key", "fractional-node-gpu", "missing-node-config", "unknown-head-type"])
def test_a_broken_copy_fails_the_validator(raw, break_it, error):
    broken = copy.deepcopy(raw)
    break_it(broken)
    with pytest.raises(error):
        validate_config(prepare_config(broken))


# -- nodes and resources -------------------------------------------------------------------------
def test_gpu_workers_autoscale_from_zero(prepared):
    workers = {name: node for name, node in prepared["available_node_types"].items()
               if name != prepared["head_node_type"]}
    assert list(workers) == ["gpu_worker"]
    gpu = workers["gpu_worker"]
    assert gpu["min_workers"] == 0
    assert 1 <= gpu["max_workers"] <= prepared["max_workers"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["resources"]["CPU"] >= 1
    assert re.fullmatch(r"g[56]\.\d*x?large", gpu["node_config"]["InstanceType"])
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"]["CPU"] == 0  # trials stay off the head (driver, GCS, MLflow)
    assert head["max_workers"] == 0


def test_setup_installs_the_project_with_the_tested_versions(prepared):
    head, worker = " ".join(prepared["head_setup_commands"]), \
        " ".join(prepared["worker_setup_commands"])
    torch_version = metadata.version("torch").split("+")[0]
    for commands in (head, worker):
        assert f"ray[default,tune]=={metadata.version('ray')}" in commands
        assert f"mlflow=={metadata.version('mlflow')}" in commands
        assert f"torch=={torch_version}" in commands
        assert "~/aitexvae" in commands
    # CPU wheel on the head, CUDA build (PyPI's default on Linux) on the GPU workers.
    assert "download.pytorch.org/whl/cpu" in head
    assert "whl/cpu" not in worker
    mounts = prepared["file_mounts"]
    for part in ("pyproject.toml", "README.md", "vae", "search", "tracking"):
        assert mounts[f"~/aitexvae/{part}"] == part
        assert (ROOT / part).exists()


def test_every_command_is_valid_shell(prepared):
    for command in _commands(prepared):
        done = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert done.returncode == 0, f"{command!r}: {done.stderr}"


# -- security ------------------------------------------------------------------------------------
def test_token_auth_on_every_node_and_driver(prepared):
    assert prepared["file_mounts"][TOKEN_MOUNT] == "~/.ray/aitexvae-cluster.token"
    local_token = Path(prepared["file_mounts"][TOKEN_MOUNT]).expanduser()
    assert ROOT not in local_token.parents, "the token file must live outside the repository"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = _ray_start(prepared[key])
        env, _, command = start.partition("ray start")
        assert "RAY_AUTH_MODE=token" in env and f"RAY_AUTH_TOKEN_PATH={TOKEN_REMOTE}" in env, \
            f"{key}: token auth must be exported before `ray start`: {start!r}"
        assert "RAY_AUTH_MODE=disabled" not in " ".join(prepared[key])
    setup = prepared["setup_commands"]
    assert any(c.startswith(f"test -s {TOKEN_MOUNT}") and "exit 1" in c for c in setup)
    assert f"chmod 600 {TOKEN_MOUNT}" in setup
    # Drivers (`ray exec`, Ray Jobs, `ray attach`) get the same settings through ~/.bashrc.
    env_file = next(c for c in setup if "> ~/.aitexvae_env" in c)
    assert "'export RAY_AUTH_MODE=token'" in env_file
    assert "RAY_AUTH_TOKEN_PATH=\"$HOME/.ray/auth_token\"" in env_file
    assert any("source ~/.aitexvae_env' >> ~/.bashrc" in c for c in setup)


def test_dashboard_and_mlflow_listen_on_loopback_only(prepared):
    values = _values(prepared)
    assert not [v for v in values if "0.0.0.0" in v or "::/0" in v]
    head_start = prepared["head_start_ray_commands"]
    assert "--dashboard-host=127.0.0.1" in _ray_start(head_start)
    mlflow = [c for c in head_start if "--backend-store-uri" in c]
    assert len(mlflow) == 1
    args = shlex.split(mlflow[0].split("sh -c ", 1)[1])[0].split()
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert "--allowed-hosts" not in args and "--disable-security-middleware" not in args
    assert "--dashboard-host=" not in _ray_start(prepared["worker_start_ray_commands"])


def test_mlflow_on_the_head_has_a_database_and_shared_artifacts(prepared):
    start = " ".join(prepared["head_start_ray_commands"])
    backend = re.search(r'--backend-store-uri "?(\S+?)"?\s', start).group(1)
    assert backend.startswith(("sqlite:///", "postgresql://"))
    if backend.startswith("sqlite"):
        assert "--workers 1" in start  # one writer for SQLite
    assert re.search(r"--artifacts-destination s3://[A-Za-z0-9.-]+/", start)
    assert "--no-serve-artifacts" not in start  # artifacts go through the server's proxy
    assert "curl -sf http://127.0.0.1:5000/health" in start  # `ray up` fails if MLflow did not start


def test_own_security_group_instead_of_rays_open_default(prepared):
    # Without SecurityGroupIds, Ray creates a group with SSH open to 0.0.0.0/0.
    for name, node in prepared["available_node_types"].items():
        config = node["node_config"]
        assert config["SecurityGroupIds"], name
        assert config["MetadataOptions"] == {"HttpTokens": "required"}, name
        assert config["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name
        assert all(d["Ebs"]["Encrypted"] for d in config["BlockDeviceMappings"]), name
    assert "security_group" not in prepared["provider"]


SECRET_PATTERNS = {
    "AWS access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "AWS secret key": r"(?i)aws_secret_access_key|AWS_SESSION_TOKEN",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "inline Ray token": r"RAY_AUTH_TOKEN=",
    "hex token": r"\b[0-9a-f]{32,}\b",
    "password in a URI": r"://[^/\s:@]+:[^/\s@]+@",
    "password": r"(?i)password\s*[:=]",
}


@pytest.mark.parametrize("pattern", SECRET_PATTERNS.values(), ids=SECRET_PATTERNS.keys())
def test_no_secrets_in_the_file(pattern):
    text = CLUSTER_YAML.read_text()
    assert not re.search(pattern, text), f"cluster.yaml matches {pattern!r}"


def test_the_secret_checks_can_fail():
    leaked = "export AWS_SECRET_ACCESS_KEY=x\nRAY_AUTH_TOKEN=" + "ab" * 32 + "\n" \
             "postgresql://mlflow:hunter2@db:5432/mlflow\nkey: AKIAABCDEFGHIJKLMNOP\n"
    hits = [name for name, pattern in SECRET_PATTERNS.items() if re.search(pattern, leaked)]
    assert {"AWS access key id", "AWS secret key", "inline Ray token", "hex token",
            "password in a URI"} <= set(hits)


# -- the documented flow -------------------------------------------------------------------------
def test_documented_searches_use_shared_storage_the_cluster_and_the_tunnel():
    readme = DOCS.read_text()
    start = readme.index("## Running on a cluster")
    end = readme.index("\n## ", start + 1) if "\n## " in readme[start + 1:] else len(readme)
    text = readme[start:end]
    tunes = [line for line in re.sub(r"\\\n\s*", " ", text).splitlines()
             if "aitexvae tune " in line]
    assert len(tunes) >= 3  # Ray Jobs, ray exec, --resume
    for line in tunes:
        assert "--storage-path s3://" in line, line
        assert "--address auto" in line, line
        assert "--tracking-uri http://127.0.0.1:5000" in line, line
    for step in ("ray up cluster.yaml", "ray job submit", "ray exec cluster.yaml",
                 "ray dashboard cluster.yaml", "ray attach cluster.yaml --port-forward 5000",
                 "aitexvae pull --tracking-uri http://127.0.0.1:5000 --out", "ray down cluster.yaml"):
        assert step in text, step


def _readme_bindings() -> dict[str, tuple[str, str]]:
    """The README's "what listens where on the head" table: service -> (port, binds to)."""
    text = DOCS.read_text()
    table = text.split("**What listens where on the head.**", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {row[0].strip(): (row[1].strip(), row[2].strip()) for row in rows}


def test_readme_says_how_the_heads_services_bind_as_cluster_yaml_starts_them(prepared):
    bindings = _readme_bindings()
    head = shlex.split(_ray_start(prepared["head_start_ray_commands"]).split("ulimit -n 65536;")[1])
    flags = dict(arg.lstrip("-").split("=", 1) for arg in head if arg.startswith("--") and "=" in arg)
    # Ray's ports: the ones the README names, and the node IP left to Ray (the VPC address).
    assert bindings["Ray GCS"][0] == f"{flags['port']} (`--port`)"
    assert bindings["raylet, object manager"][0].startswith(f"{flags['object-manager-port']} ")
    assert "node-ip-address" not in flags and "ray-client-server-port" not in flags
    # Dashboard and MLflow: loopback, in the file and in the table.
    assert flags["dashboard-host"] == "127.0.0.1"
    assert bindings["Ray dashboard"] == ("8265", "`127.0.0.1` (`--dashboard-host=127.0.0.1`)")
    assert "dashboard-port" not in flags  # 8265, as the table says
    mlflow = next(c for c in prepared["head_start_ray_commands"] if "--backend-store-uri" in c)
    args = shlex.split(mlflow.split("sh -c ", 1)[1])[0].split()
    host, port = args[args.index("--host") + 1], args[args.index("--port") + 1]
    assert bindings["MLflow server"][:2] == (port, f"`{host}` (`--host {host}`)")
    assert host == "127.0.0.1"
    # Nothing else is said to listen beyond loopback without the table naming why.
    assert set(bindings) == {"Ray GCS", "raylet, object manager", "Ray dashboard", "MLflow server"}
