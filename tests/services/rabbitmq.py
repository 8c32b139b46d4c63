"""A real RabbitMQ broker on free 127.0.0.1 ports (see ports.py), with its own directory, for tests.

Debian's `rabbitmq-server` package is used directly: `/usr/lib/rabbitmq/bin/rabbitmq-server`
(not the /usr/sbin wrapper, which switches to the `rabbitmq` user) runs as the current user
when HOME (for the Erlang cookie), the data and log directories, the node name and every
port are its own. It gets its own `epmd` too, so it never touches a system broker. The
broker can be stopped and started again on the same ports and data (durable queues and
persistent messages survive), and every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ports import PortTaken, listens_on, on_free_ports, says_port_taken
from waiting import eventually

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
        # A listening RabbitMQ answers a wrong protocol header with its own
        # header and closes: proof that the AMQP listener is up, not just the port.
        s.sendall(b"HELLO-01")
        return s.recv(8).startswith(b"AMQP")
    return False


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group the process leads, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


class RabbitMQ:
    """One broker node: `start()`, `stop()`, `start()` again, `close()` at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Chosen by the first start(), kept by every later one (clients keep the URL).
        self.port = self.dist_port = self.epmd_port = 0
        self._epmd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        (root / "home").mkdir(parents=True, exist_ok=True)
        (root / "log").mkdir(exist_ok=True)
        (root / "mnesia").mkdir(exist_ok=True)
        (root / "enabled_plugins").write_text("[].\n")

    @property
    def node(self) -> str:
        return f"tcgraph-test-{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "HOME": str(self.root / "home"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            # Erlang distribution on loopback and the chosen port only.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                f"-kernel inet_dist_use_interface {{127,0,0,1}} "
                f"-kernel inet_dist_listen_min {self.dist_port} "
                f"-kernel inet_dist_listen_max {self.dist_port}"),
        })
        return env

    def start(self) -> None:
        """Start the node and wait until its AMQP listener answers.

        The first start takes free ports (new ones if the node or its epmd found one taken
        meanwhile); a start after `stop` or `kill` uses the same ones again.
        """
        if self.port:
            self._start_on(self.port, self.dist_port, self.epmd_port)
        else:
            on_free_ports(self._start_on, count=3)

    def _start_on(self, port: int, dist_port: int, epmd_port: int) -> None:
        self.port, self.dist_port, self.epmd_port = port, dist_port, epmd_port
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{port}\n"
            "loopback_users.guest = true\n"
            # Tests publish bursts: never throttle them on the shared machine's disk or memory.
            "disk_free_limit.absolute = 1MB\n"
            "vm_memory_high_watermark.relative = 0.9\n")
        env = self._env()
        console = self.root / "log" / "console.log"
        said = console.stat().st_size if console.exists() else 0
        if self._epmd is None:
            self._start_epmd(epmd_port, env)
        with open(console, "ab") as log:
            self._server = subprocess.Popen(
                [str(SERVER)], env=env, start_new_session=True, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL)
        server = self._server

        def listening() -> bool:
            if server.poll() is not None:
                with open(console, errors="replace") as text:
                    text.seek(said)
                    output = text.read()
                node_log = self.root / "log" / f"{self.node}.log"
                if node_log.exists():
                    output += node_log.read_text(errors="replace")
                if says_port_taken(output):
                    self.close()
                    self.port = 0
                    raise PortTaken(output)
                raise RuntimeError(f"rabbitmq-server exited with {server.returncode}: "
                                   f"see {self.root / 'log'}")
            # Our node's listener, not one that took the port while ours failed to bind.
            return listens_on(server.pid, port) and _port_open(port)

        eventually(listening, what="rabbitmq-server to listen", timeout=START_TIMEOUT_S,
                   interval=0.1)

    def _start_epmd(self, port: int, env: dict[str, str]) -> None:
        """Start the node's own epmd, and wait until it listens.

        An epmd that finds its port answering exits at once ("already a epmd running"):
        another process took the port, and the node must not register with that one.
        """
        epmd = self._epmd = subprocess.Popen(
            ["epmd", "-address", "127.0.0.1", "-port", str(port)],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

        def listening() -> bool:
            if epmd.poll() is not None:
                self._epmd = None
                self.port = 0
                raise PortTaken(f"epmd's port {port}")
            return listens_on(epmd.pid, port)

        eventually(listening, what="epmd to listen", timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the node (its data stays for the next `start`)."""
        if self._server is not None:
            _stop(self._server, STOP_TIMEOUT_S)
            self._server = None

    def kill(self) -> None:
        """Kill the node at once, as a crash would."""
        if self._server is not None and self._server.poll() is None:
            os.killpg(self._server.pid, signal.SIGKILL)
            self._server.wait(STOP_TIMEOUT_S)
        self._server = None

    def close(self) -> None:
        """Stop the node and its epmd."""
        self.stop()
        if self._epmd is not None:
            _stop(self._epmd, STOP_TIMEOUT_S)
            self._epmd = None


@contextlib.contextmanager
def running_rabbitmq() -> Iterator[RabbitMQ]:
    """A started broker in a temporary directory, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tcgraph-rabbitmq-") as tmp:
        broker = RabbitMQ(Path(tmp))
        try:
            broker.start()
            yield broker
        finally:
            broker.close()
