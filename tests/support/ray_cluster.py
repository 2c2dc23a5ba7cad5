"""A real multi-node Ray cluster on this machine, for tests: one `ray start` process per node.

Each node is a separate ``ray start --block`` process in its own session (process group), so a
node can be removed mid-search by killing its group, as a cloud instance disappears. Every node
and every driver shares token authentication (``RAY_AUTH_MODE=token`` + a random token file).

Teardown never calls ``ray stop``: it kills every Ray process on the machine by name, which
would take down other people's clusters on a shared host. Instead every process of this cluster
carries a marker environment variable (inherited by raylets, GCS, agents and workers, whatever
their process group), and teardown kills exactly the processes that carry it.

    with LocalRayCluster(num_nodes=2) as cluster:
        subprocess.run([...driver...], env=cluster.driver_env())

Set AITEXVAE_KEEP_RAY_LOGS=1 to keep the nodes' logs (under /tmp/aitexray-*) after teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER_VAR = "AITEXVAE_TEST_RAY_CLUSTER"
# Ray's fake multi-node provider starts each launched node's raylet with its node id here; the
# node's processes (raylet, agents, workers) inherit it.
LAUNCHED_NODE_VAR = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"
RAY = str(Path(sys.executable).with_name("ray"))
STARTED_LINE = "Ray runtime started."
STATE_DRIVER = """\
import json, ray
ray.init(address={address!r}, log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]
print("STATE=" + json.dumps({{"alive_nodes": len(alive),
      "cpus": ray.cluster_resources().get("CPU", 0),
      "node_ids": sorted(n["NodeID"] for n in alive)}}))
"""


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RayNode:
    """One `ray start --block` process; its process group holds the node's Ray processes."""

    name: str
    process: subprocess.Popen
    log_path: Path
    temp_dir: Path
    num_cpus: int

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class LocalRayCluster:
    """Head + worker nodes as separate processes with token auth; a context manager.

    ``root`` is kept short on purpose (Ray's unix socket paths must stay under ~107 bytes), so
    it defaults to a fresh directory under /tmp rather than pytest's long tmp_path.
    """

    num_nodes: int = 2
    num_cpus: int = 1
    start_timeout_s: float = 90.0
    root: Path | None = None
    cluster_id: str = field(default_factory=lambda: secrets.token_hex(6))
    nodes: list[RayNode] = field(default_factory=list)
    port: int = 0
    # An autoscaling head (Ray's fake multi-node provider): a function of the GCS address
    # giving the autoscaling config (written to ``autoscaling_config_path``), and the head's own
    # CPUs (cluster.yaml's head has none). The provider launches worker nodes as processes of
    # the head's monitor; they inherit the marker, so teardown finds them too.
    autoscaling: Callable[[str], dict] | None = None
    head_cpus: int | None = None
    head_env: dict[str, str] = field(default_factory=dict)  # extra environment of the head
    _owns_root: bool = False

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LocalRayCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="aitexray-", dir="/tmp"))
            self._owns_root = True
        self.root.mkdir(parents=True, exist_ok=True)
        # Owner-only from the first byte, as a user's token file should be.
        descriptor = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as token:
            token.write(secrets.token_hex(32))
        self.port = free_port()
        atexit.register(self.stop)  # a test that dies without its finally still cleans up
        try:
            self._start_node(head=True)
            for _ in range(self.num_nodes - 1):
                self.add_node()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill this cluster's processes (and only them); remove the root we created."""
        atexit.unregister(self.stop)
        for node in self.nodes:
            _kill_group(node.process)
        _kill_marked(self.cluster_id)
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.warning("node %s did not exit after SIGKILL", node.name)
        keep = os.environ.get("AITEXVAE_KEEP_RAY_LOGS") == "1"  # for debugging a failed test
        if self._owns_root and self.root is not None and not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- nodes -----------------------------------------------------------------------------
    @property
    def token_path(self) -> Path:
        if self.root is None:
            raise RuntimeError("the cluster has not been started")
        return self.root / "ray_token"

    @property
    def autoscaling_config_path(self) -> Path:
        return self.token_path.parent / "autoscaling.json"

    @property
    def address(self) -> str:
        """The GCS address drivers and nodes connect to (loopback; Ray may advertise another)."""
        return f"127.0.0.1:{self.port}"

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    def node_env(self) -> dict[str, str]:
        """Environment for `ray start` and drivers: token auth on, this cluster's marker set."""
        env = dict(os.environ)
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            env.pop(name, None)  # an inherited value would override ours
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
                    MARKER_VAR: self.cluster_id, "RAY_USAGE_STATS_ENABLED": "0"})
        return env

    def driver_env(self) -> dict[str, str]:
        """Environment for a driver process (`aitexvae tune --address ...`, a script)."""
        return {**self.node_env(), "RAY_ADDRESS": self.address}

    def add_node(self, num_cpus: int | None = None) -> RayNode:
        return self._start_node(head=False, num_cpus=num_cpus)

    def remove_node(self, node: RayNode) -> None:
        """Kill a node abruptly (SIGKILL to its process group), as a lost cloud instance."""
        if node is self.head:
            raise ValueError("refusing to remove the head node; remove a worker node instead")
        _kill_group(node.process)
        node.process.wait(timeout=10)

    def node_of_pid(self, pid: int) -> RayNode | None:
        """The node whose raylet started worker process ``pid`` (Tune reports a trial's pid).

        Every node writes ``worker-<id>-<job>-<pid>.out`` into its own temp dir, so this works
        after the worker has exited, even though all nodes share one host name and IP here.
        """
        for node in self.nodes:
            if any(node.temp_dir.glob(f"session_*/logs/worker-*-{int(pid)}.out")):
                return node
        return None

    def launched_node_of_pid(self, pid: int) -> str | None:
        """The id of the autoscaler-launched node a live process runs on; None on the head.

        Read from the process's environment, so only while it runs (the launched nodes share
        the head's temp dir here, which rules out ``node_of_pid``'s log-file lookup).
        """
        try:
            environ = Path(f"/proc/{int(pid)}/environ").read_bytes().split(b"\0")
        except OSError:
            return None
        if f"{MARKER_VAR}={self.cluster_id}".encode() not in environ:
            return None
        prefix = f"{LAUNCHED_NODE_VAR}=".encode()
        ids = [item[len(prefix):].decode() for item in environ if item.startswith(prefix)]
        head_id = self.head_env.get(LAUNCHED_NODE_VAR)
        return next((node_id for node_id in ids if node_id != head_id), None)

    def kill_launched_node(self, node_id: str) -> int:
        """SIGKILL every process of one autoscaler-launched node, as a lost cloud instance.

        The provider still lists the node; the autoscaler finds it dead and replaces it.
        Returns how many processes were killed.
        """
        if node_id == self.head_env.get(LAUNCHED_NODE_VAR):
            raise ValueError("refusing to kill the head node; kill a launched node instead")
        return _kill_marked(self.cluster_id, f"{LAUNCHED_NODE_VAR}={node_id}")

    def _start_node(self, *, head: bool, num_cpus: int | None = None) -> RayNode:
        root = self.token_path.parent
        index = len(self.nodes)
        name = "head" if head else f"worker{index}"
        temp_dir = root / f"n{index}"
        log_path = root / f"{name}.log"
        cpus = self.num_cpus if num_cpus is None else num_cpus
        if head and self.head_cpus is not None:
            cpus = self.head_cpus
        command = [RAY, "start", "--block", f"--num-cpus={cpus}", "--num-gpus=0",
                   f"--temp-dir={temp_dir}", "--disable-usage-stats",
                   # Explicit ports: the defaults (52365, 10001) collide between two nodes
                   # on one machine and with other clusters on a shared host.
                   f"--dashboard-agent-listen-port={free_port()}",
                   f"--metrics-export-port={free_port()}"]
        env = self.node_env()
        if head:
            command += ["--head", f"--port={self.port}", "--include-dashboard=false"]
            if self.autoscaling is not None:
                self.autoscaling_config_path.write_text(json.dumps(self.autoscaling(self.address)))
                command += [f"--autoscaling-config={self.autoscaling_config_path}"]
                env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
            env.update(self.head_env)
        else:
            command += [f"--address={self.address}"]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        node = RayNode(name, process, log_path, temp_dir, cpus)
        self.nodes.append(node)
        self._wait_started(node)
        return node

    def _wait_started(self, node: RayNode) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if STARTED_LINE in node.log_tail(100_000):
                return
            if not node.alive:
                raise RuntimeError(f"ray node {node.name} exited with {node.process.returncode}:"
                                   f"\n{node.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"ray node {node.name} did not start within {self.start_timeout_s}s:"
                           f"\n{node.log_tail()}")

    # ---- drivers ---------------------------------------------------------------------------
    def run_driver(self, code: str, *, env: dict[str, str] | None = None,
                   timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run ``code`` in a fresh Python process (default env: this cluster's driver env)."""
        return subprocess.run([sys.executable, "-c", code], env=env or self.driver_env(),
                              capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)

    def cluster_state(self, timeout: float = 120.0) -> dict:
        """``{"alive_nodes": int, "cpus": float, "node_ids": [...]}`` seen by a real driver."""
        code = STATE_DRIVER.format(address=self.address)
        done = self.run_driver(code, timeout=timeout)
        for line in done.stdout.splitlines():
            if line.startswith("STATE="):
                return json.loads(line[len("STATE="):])
        raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-3000:]}")

    def wait_for_nodes(self, count: int, timeout: float = 60.0) -> dict:
        """Poll until ``count`` nodes are alive (a removed node takes a while to be declared dead)."""
        deadline = time.monotonic() + timeout
        state = self.cluster_state()
        while state["alive_nodes"] != count and time.monotonic() < deadline:
            time.sleep(2)
            state = self.cluster_state()
        return state


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # start_new_session: pgid == pid


def _kill_marked(cluster_id: str, *also: str) -> int:
    """SIGKILL every process whose environment carries this cluster's marker (and ``also``)."""
    needles = [f"{MARKER_VAR}={cluster_id}".encode(), *(item.encode() for item in also)]
    me, killed = os.getpid(), 0
    for _ in range(3):  # a dying raylet may still fork a worker; sweep until none is left
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                if all(needle in environ for needle in needles):
                    found.append(int(entry.name))
            except OSError:
                continue
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        if not found:
            return killed
        time.sleep(0.5)
    return killed
