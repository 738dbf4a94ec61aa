"""Long-lived Spark processes from pyspark's own distribution: a standalone master and its
workers, and a Spark Connect server, each started as a separate JVM on this machine.

Operators use them to try the cluster path on one machine (`fink-pipeline spark connect
start|stop|status` manages a Connect server under the state directory); the test suite starts a
master and two workers (`test_spark_cluster.py`). A real cluster starts the same classes with
its own tooling (`$SPARK_HOME/sbin/start-master.sh`, `start-worker.sh`, `start-connect-server.sh`).

Every process gets `SPARK_HOME` (pyspark's folder: `bin/spark-class`, `jars/`), its bind address
(`SPARK_LOCAL_IP`) and `PYSPARK_PYTHON`: the Python workers its executors start must run an
interpreter that has pyarrow and this package (here the running one).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class SparkServiceError(RuntimeError):
    """A Spark process did not start (its log's last lines are in the message)."""


def spark_home() -> str:
    """pyspark's folder, a complete Spark distribution (bin/, sbin/, jars/)."""
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def service_env(host: str, work_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Spark JVM started here: SPARK_HOME, bind address, work, log and pid
    folders, and the Python its executors' workers run."""
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": spark_home(),
        "SPARK_LOCAL_IP": host,
        "SPARK_WORKER_DIR": str(work_dir / "work"),
        "SPARK_LOG_DIR": str(work_dir / "logs"),
        "SPARK_PID_DIR": str(work_dir / "pids"),
        "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
    })
    env.update(extra or {})
    return env


@dataclass
class SparkProcess:
    """One Spark JVM started by `start_process` (its own process group) and its log file."""

    name: str
    pid: int
    log: Path
    popen: subprocess.Popen | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM its process group (the JVM and any child), SIGKILL after `timeout_s`."""
        _stop_group(self.pid, timeout_s, self.popen)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_process(name: str, args: list[str], env: Mapping[str, str], log: Path) -> SparkProcess:
    """Start `args` in its own session (so that stopping it stops its children), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(args, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    return SparkProcess(name, popen.pid, log, popen)


def start_master(work_dir: Path, host: str = "127.0.0.1", timeout_s: float = 60.0) -> tuple[SparkProcess, str, str]:
    """A standalone master on free ports: (process, spark://host:port, web UI URL), once its UI answers."""
    port, ui_port = free_port(host), free_port(host)
    args = [os.path.join(spark_home(), "bin", "spark-class"), MASTER_CLASS,
            "--host", host, "--port", str(port), "--webui-port", str(ui_port)]
    process = start_process("master", args, _daemon_env(host, work_dir), work_dir / "logs" / "master.out")
    ui = f"http://{host}:{ui_port}"
    try:
        _wait(lambda: master_state(ui) is not None, process, timeout_s)
    except BaseException:
        process.stop()
        raise
    return process, f"spark://{host}:{port}", ui


def start_worker(master_url: str, work_dir: Path, name: str, host: str = "127.0.0.1", cores: int = 1,
                 memory: str = "1g") -> SparkProcess:
    """A standalone worker of `master_url` with `cores` and `memory` for its executors."""
    args = [os.path.join(spark_home(), "bin", "spark-class"), WORKER_CLASS,
            "--cores", str(cores), "--memory", memory, "--host", host,
            "--webui-port", str(free_port(host)), "--work-dir", str(work_dir / name), master_url]
    return start_process(name, args, _daemon_env(host, work_dir), work_dir / "logs" / f"{name}.out")


def _daemon_env(host: str, work_dir: Path) -> dict[str, str]:
    """A master's or worker's environment: they only schedule, a small heap does (executors get
    their own JVMs; the Connect server's driver heap is its spark.driver.memory)."""
    return service_env(host, work_dir, {"SPARK_DAEMON_MEMORY": os.environ.get("SPARK_DAEMON_MEMORY", "256m")})


def master_state(ui: str, timeout_s: float = 2.0) -> dict | None:
    """The master's JSON status (`<web UI>/json/`: workers, active and completed applications), or None."""
    try:
        with urllib.request.urlopen(f"{ui}/json/", timeout=timeout_s) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def wait_for_workers(ui: str, count: int, processes: list[SparkProcess], timeout_s: float = 60.0) -> list[dict]:
    """Wait until the master lists `count` ALIVE workers; return them."""
    def alive() -> list[dict]:
        state = master_state(ui) or {}
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    deadline = time.monotonic() + timeout_s
    while len(alive()) < count:
        for process in processes:
            if not process.alive():
                raise SparkServiceError(f"Spark {process.name} exited:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise SparkServiceError(f"{len(alive())} of {count} workers registered with the master at {ui} "
                                    f"after {timeout_s:.0f} s")
        time.sleep(0.2)
    return alive()


def _wait(ready, process: SparkProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not process.alive():
            raise SparkServiceError(f"Spark {process.name} exited:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise SparkServiceError(f"Spark {process.name} not ready after {timeout_s:.0f} s:\n{process.log_tail()}")
        time.sleep(0.2)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _stop_group(pid: int, timeout_s: float, popen: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group led by `pid` (a process this module started), then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if popen is not None and popen.poll() is not None:
                return
            if popen is None and not _pid_alive(pid):
                return
            time.sleep(0.1)
    if popen is not None:
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


# --- Spark Connect: one long-lived Spark that runs attach to ------------------------------------

CONNECT_STATE_FILE = "spark-connect.json"
# Server defaults: the embedded stack's conf (fink_pipeline.spark), minus what a long-lived JVM
# should not take (the short-lived driver's C1-only JIT: a server's C2 compiles pay back), plus a
# session per run that its Python workers outlive.
CONNECT_SERVER_CONF: dict[str, str] = {
    "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods",
    "spark.python.worker.reuse": "true",
}


def connect_server_conf(master: str, conf: Mapping[str, str] | None = None) -> dict[str, str]:
    """The conf a Connect server starts with: `fink_pipeline.spark.default_conf(master)` (so a
    run through the server publishes what a local run does), `CONNECT_SERVER_CONF`, then `conf`."""
    from fink_pipeline.spark import default_conf

    settings = default_conf(master)
    settings.update(CONNECT_SERVER_CONF)
    settings.update(conf or {})
    return settings


def start_connect_server(work_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                         master: str = "local[*]", conf: Mapping[str, str] | None = None,
                         timeout_s: float = 120.0) -> tuple[SparkProcess, str]:
    """A Spark Connect server (`SparkConnectServer`, as `sbin/start-connect-server.sh` starts it)
    on `host:port` (default a free port), its own Spark application on `master`:
    (process, sc://host:port), once a client session answers a query."""
    port = port or free_port(host)
    settings = connect_server_conf(master, conf)
    settings.update({"spark.connect.grpc.binding.address": host, "spark.connect.grpc.binding.port": str(port)})
    args = [os.path.join(spark_home(), "bin", "spark-submit"), "--class", CONNECT_SERVER_CLASS,
            "--name", "fink-pipeline Spark Connect", "--master", master]
    if "spark.driver.memory" in settings:  # a JVM option: only spark-submit can set it
        args += ["--driver-memory", settings["spark.driver.memory"]]
    for key, value in sorted(settings.items()):
        args += ["--conf", f"{key}={value}"]
    env = service_env(host, work_dir, {"SPARK_CONNECT_MODE": "0"})
    process = start_process("connect", args, env, work_dir / "logs" / "connect.out")
    url = f"sc://{host}:{port}"
    try:
        _wait(lambda: _port_open(host, port), process, timeout_s)
    except BaseException:
        process.stop()
        raise
    return process, url


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def shared_session_url(url: str) -> str:
    """`url` naming a new server-side session that runs share (`fink_pipeline.spark.shares_connect_session`):
    its Python workers and their Kafka producers stay warm between runs."""
    import uuid

    return f"{url}/;session_id={uuid.uuid4()}"


def start_managed_connect(state_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                          master: str = "local[*]", conf: Mapping[str, str] | None = None) -> str:
    """Start the state directory's Connect server (`fink-pipeline spark connect start`); the URL
    runs attach to (`shared_session_url`: one server-side session that runs share).

    Refused when one already runs (its URL is in the message)."""
    running = status_managed_connect(state_dir)
    if running:
        raise SparkServiceError(f"a Spark Connect server already runs at {running}: "
                                "`fink-pipeline spark connect stop` first")
    work = state_dir / "spark-connect"
    process, url = start_connect_server(work, port=port, host=host, master=master, conf=conf)
    state = {"pid": process.pid, "url": shared_session_url(url), "host": host, "port": int(url.rsplit(":", 1)[1]),
             "log": str(process.log)}
    tmp = state_dir / f".{CONNECT_STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(state_dir / CONNECT_STATE_FILE)
    return state["url"]


def status_managed_connect(state_dir: Path) -> str | None:
    """The URL of the state directory's Connect server when it runs and listens, else None."""
    try:
        state = json.loads((state_dir / CONNECT_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not _pid_alive(int(state["pid"])) or not _port_open(state["host"], int(state["port"])):
        return None
    return state["url"]


def stop_managed_connect(state_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the state directory's Connect server; False when none was running."""
    path = state_dir / CONNECT_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    pid = int(state["pid"])
    was_running = _pid_alive(pid)
    if was_running:
        _stop_group(pid, timeout_s)
    path.unlink(missing_ok=True)
    return was_running
