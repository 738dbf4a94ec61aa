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
        # the master and workers only schedule: a small heap (executors get their own JVMs)
        "SPARK_DAEMON_MEMORY": env.get("SPARK_DAEMON_MEMORY", "256m"),
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
    process = start_process("master", args, service_env(host, work_dir), work_dir / "logs" / "master.out")
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
    return start_process(name, args, service_env(host, work_dir), work_dir / "logs" / f"{name}.out")


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
