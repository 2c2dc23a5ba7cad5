"""The launcher's view of Ray and of the storage path: connect, check resources, read/write files.

Part of the launcher (it calls ``ray.init``): split out so that ``launcher.py`` stays about the
Tuner. Storage paths may be local directories or URIs (``s3://``, ``gs://``); small files go
through ``pyarrow.fs`` for the latter, exactly as Tune itself writes there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shutil
import socket
import stat
from dataclasses import dataclass

import ray

from vae.config import ConfigError

log = logging.getLogger(__name__)

AUTH_HINT = ("if the cluster uses token authentication (the default for `ray start` in Ray 2.60), "
             "export the same RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH as its nodes")


class ClusterError(ConfigError):
    """Ray could not be reached, or cannot run a trial as asked."""


@dataclass(frozen=True)
class NodeType:
    """A kind of node the cluster has or its autoscaler may launch."""

    name: str
    cpus: float
    gpus: float
    max_count: int = -1  # -1: unbounded; 0: never launched (only running ones count)

    def fits(self, cpus: float, gpus: float) -> bool:
        return self.cpus >= cpus and self.gpus >= gpus

    def __str__(self) -> str:
        if math.isinf(self.cpus):
            return f"{self.name} (resources as its instance type has)"
        return f"{self.name} ({self.cpus:g} CPU, {self.gpus:g} GPU)"


@dataclass(frozen=True)
class ClusterInfo:
    address: str | None  # None: a local Ray started (or found) in this process
    nodes: int
    cpus: float
    gpus: float
    max_node_cpus: float
    running: tuple[NodeType, ...] = ()  # the live nodes, one entry each
    launchable: tuple[NodeType, ...] = ()  # what the autoscaler may add (empty: no autoscaler)


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address={address!r} is invalid; allowed: 'auto' or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}"
                           " (is `ray start --head` running there, and the port open?)") from None


def connect(address: str | None) -> tuple[ClusterInfo, bool]:
    """Join ``address`` ("auto", host:port) or start a local Ray; returns (info, started_here).

    A Ray already initialised in this process (a test, a notebook) is used as it is.
    """
    started = False
    if not ray.is_initialized():
        if address and address != "auto" and not address.startswith("ray://"):
            _reachable(address)  # fail in seconds with a clear message, not after Ray's retries
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            raise ClusterError(f"cannot connect to {where}: {error}; {AUTH_HINT}") from None
        started = True
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    running = tuple(NodeType(n.get("NodeManagerAddress", "node"),
                             float(n["Resources"].get("CPU", 0)),
                             float(n["Resources"].get("GPU", 0)), 0) for n in nodes)
    info = ClusterInfo(address=address, nodes=len(nodes), cpus=float(total.get("CPU", 0)),
                       gpus=float(total.get("GPU", 0)),
                       max_node_cpus=max((n.cpus for n in running), default=0.0),
                       running=running, launchable=launchable_node_types())
    log.info("Ray: %d node(s), %g CPU(s), %g GPU(s)%s", info.nodes, info.cpus, info.gpus,
             f"; the autoscaler may launch {', '.join(map(str, info.launchable))}"
             if info.launchable else "")
    return info, started


BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where the cluster launcher puts it on the head


def launchable_node_types() -> tuple[NodeType, ...]:
    """The node types the cluster's autoscaler may launch; empty without an autoscaler.

    From what the autoscaler reported to the GCS (autoscaler v2;
    ``ray._private.state.state.get_cluster_config``, which Ray Data reads for the same purpose),
    else from the autoscaling config the cluster launcher left on the head
    (``~/ray_bootstrap_config.yaml``, which Tune also reads to tell a cluster), where
    ``aitexvae tune --address auto`` runs under ``ray exec``. Autoscaler v1 reports nothing to
    the GCS, so a driver elsewhere sees only the live nodes.
    """
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()  # private API: guarded
    except Exception as error:
        log.debug("no autoscaler cluster config in the GCS: %s", error)
        config = None
    if config is not None and config.node_group_configs:
        return tuple(NodeType(group.name, float(group.resources.get("CPU", 0)),
                              float(group.resources.get("GPU", 0)), int(group.max_count))
                     for group in config.node_group_configs if group.max_count != 0)
    return node_types_of(os.path.expanduser(BOOTSTRAP_CONFIG))


def node_types_of(config_path: str) -> tuple[NodeType, ...]:
    """The launchable worker node types of a cluster-launcher config (``cluster.yaml``'s
    ``available_node_types`` with ``max_workers`` > 0); empty if the file is absent or unusable."""
    if not os.path.isfile(config_path):
        return ()
    import yaml  # the bootstrap config is JSON, a user's cluster.yaml YAML: YAML reads both

    try:
        with open(config_path, encoding="utf-8") as file:
            config = yaml.safe_load(file)
        types = config["available_node_types"]
        head = config.get("head_node_type")
        return tuple(_node_type(name, spec) for name, spec in types.items()
                     if name != head and int(spec.get("max_workers", 0)) != 0)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as error:
        log.warning("cannot read the node types of %s (%s); checking the live nodes only",
                    config_path, error)
        return ()


def _node_type(name: str, spec: dict) -> NodeType:
    if "resources" not in spec:  # the launcher fills them in from the instance type: unknown
        return NodeType(name, math.inf, math.inf, int(spec["max_workers"]))
    resources = spec["resources"]
    return NodeType(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)),
                    int(spec["max_workers"]))


def check_resources(info: ClusterInfo, settings) -> float:
    """Fail if one trial fits on no node, live or launchable; return the GPUs per trial.

    A trial that fits only a node type the autoscaler may launch is accepted (Tune's pending
    trial is what makes the autoscaler launch it), and the wait is announced. ``None`` GPUs
    means 1 where the cluster has or can launch GPUs, else 0.
    """
    cpus, gpus = float(settings.cpus_per_trial), settings.gpus_per_trial
    if gpus is None:
        any_gpu = info.gpus > 0 or any(t.gpus > 0 for t in info.launchable)
        gpus = 1.0 if any_gpu else 0.0
    gpus = float(gpus)
    if any(node.fits(cpus, gpus) for node in info.running):
        return gpus
    fitting = [t for t in info.launchable if t.fits(cpus, gpus)]
    if fitting:
        log.warning("no live node fits a trial (%g CPU, %g GPU); waiting for the autoscaler to "
                    "launch %s (Tune shows the trials PENDING until then)", cpus, gpus,
                    " or ".join(map(str, fitting)))
        return gpus
    kinds = [*info.running, *info.launchable]
    if gpus > 0 and not any(node.gpus > 0 for node in kinds):
        raise ClusterError(f"--gpus-per-trial={gpus:g} but the cluster has no GPU and can "
                           "launch none; use --gpus-per-trial 0 (CPU) or a cluster with GPUs")
    launchable = ", ".join(map(str, info.launchable)) or "none"
    raise ClusterError(f"--cpus-per-trial={cpus:g} --gpus-per-trial={gpus:g} fit no node: the "
                       f"largest node has {info.max_node_cpus:g} CPU(s), and the autoscaler may "
                       f"launch: {launchable}; a trial runs on one node (ask for less, or add a "
                       "node type that fits)")


def is_uri(path: str) -> bool:
    return "://" in path


def warn_about_storage(info: ClusterInfo, storage_path: str) -> None:
    if info.nodes > 1 and not is_uri(storage_path):
        log.warning(
            "this Ray cluster has %d nodes but --storage-path %s is a local directory: trials on "
            "other nodes write their checkpoints to *their own* disk, where neither this driver "
            "nor --resume can find them. Use storage every node shares: a path on a shared "
            "file system mounted at the same place on every node, or cloud storage "
            "(s3://bucket/path, gs://bucket/path).", info.nodes, storage_path)


# A search writes a checkpoint per trial-epoch (a few MB at 256² to hundreds for large
# full-covariance heads) and Tune's state beside them; below this a search cannot even start.
MIN_FREE_BYTES = 64 << 20


def check_storage(storage_path: str) -> None:
    """Fail before Ray starts when a local ``--storage-path`` cannot be written or is full.

    (URIs are checked by the first write: a probe object in a bucket costs a round trip and may
    need credentials only the workers have.)
    """
    if is_uri(storage_path):
        return
    problem = storage_problem(storage_path, label="--storage-path ")
    if problem is not None:
        if problem.startswith("cannot write"):
            problem += "; give a writable directory (or s3://, gs://)"
        raise ClusterError(problem)
    free = shutil.disk_usage(storage_path).free
    if free < MIN_FREE_BYTES:
        raise ClusterError(f"no space left on --storage-path {storage_path}: {free >> 20} MiB "
                           f"free, a search needs at least {MIN_FREE_BYTES >> 20} MiB for its "
                           "checkpoints")


def storage_problem(path: str, label: str = "") -> str | None:
    """Why ``path`` (local) cannot take a write now, in one line, or None: a small file is
    written, synced and removed. Also asked after a trial or the search failed, so that a full
    or read-only disk is named as the cause instead of a truncated error file Tune left."""
    if is_uri(path):
        return None
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".aitexvae-write-test-{os.getpid()}")
        try:
            with open(probe, "wb") as handle:
                handle.write(b"0")
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(probe)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            return f"no space left on {label}{path}"
        return f"cannot write {label}{path}: {error.strerror or error}"
    return None


def check_trusted(experiment_path: str) -> None:
    """Refuse to resume from a local experiment that others could have written to.

    ``--resume`` hands Tune its own pickles (``tuner.pkl``, the trials of its experiment state),
    and unpickling runs whatever a writer put there (the searcher's state is JSON, checked by
    ``search.searcher.parse_state``). On a local path, every such file and the
    folders above it must belong to this user (or root) and be writable by no one else. A
    bucket (``s3://``, ``gs://``) is the operator's to lock down: see the README's cluster
    section.
    """
    if is_uri(experiment_path):
        return
    me = os.getuid()
    folder = os.path.realpath(experiment_path)
    paths = [folder] + [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                        if name.endswith((".pkl", ".json"))]
    for path in paths:
        info = os.stat(path)
        problems = []
        if info.st_uid not in (me, 0):
            problems.append(f"owned by uid {info.st_uid}")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problems.append(f"writable by others (mode {oct(info.st_mode & 0o777)})")
        if problems:
            raise ClusterError(
                f"refusing to resume from {experiment_path}: {path} is {' and '.join(problems)}; "
                "resuming unpickles Tune's state from there, so whoever can write it can run "
                f"code here. Check it, then `chmod -R go-w {experiment_path}` (and chown it)")


# -- small files on local or remote storage ------------------------------------------------------
def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_uri(base) else os.path.join(base, name)


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(path)
    import pyarrow.fs

    fs, inner = _fs(path)
    return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound


def list_names(path: str) -> list[str]:
    """The names of the entries of the folder ``path`` (local or a bucket); [] if absent."""
    if not is_uri(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    import pyarrow.fs

    fs, inner = _fs(path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def read_bytes(path: str) -> bytes:
    if not is_uri(path):
        with open(path, "rb") as file:
            return file.read()
    fs, inner = _fs(path)
    with fs.open_input_stream(inner) as stream:
        return stream.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    if not is_uri(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        return
    fs, inner = _fs(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(text.encode("utf-8"))
