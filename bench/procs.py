"""Process-tree memory and wall time of a command, for the benches that run whole commands.

`TreeRSS` samples a process tree's summed RSS (and PSS) in a thread; `run_sampled` runs a
command under it. Shared by bench/crossmatch.py and bench/end_to_end.py.
"""

from __future__ import annotations

import subprocess
import threading
import time


class TreeRSS:
    """Samples the summed RSS of a process tree (root and its descendants, minus `exclude` and
    their descendants) every `interval` s in a thread, and its summed PSS (shared pages, such as
    a memory-mapped catalogue index, divided among the processes mapping them) every
    `pss_every` samples; `peak()` / `peak_pss()` since the last `mark()`, `breakdown()` the
    RSS per kind of process (root, java, other descendants) at the RSS peak; `cpu_seconds()`
    the CPU (user + system) each kind used, from each process's last sample (a process that
    ends between two samples loses at most `interval` s of CPU)."""

    def __init__(self, root_pid: int, interval: float = 0.1, exclude: set[int] | None = None, pss_every: int = 5):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.pss_every = pss_every
        self.exclude = exclude or set()
        self._peak, self._peak_pss, self._breakdown = 0, 0, {}
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (kind, CPU seconds at its last sample)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _procs(self):
        psutil = self._psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []
        skipped: set[int] = set()
        for pid in self.exclude:
            try:
                skipped |= {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
            except psutil.Error:
                skipped.add(pid)
        return [p for p in procs if p.pid not in skipped]

    def sample(self, pss: bool = False) -> tuple[int, dict, int | None]:
        psutil = self._psutil
        total, kinds, pss_total = 0, {}, 0 if pss else None
        for proc in self._procs():
            try:
                rss = proc.memory_info().rss
                kind = "root" if proc.pid == self.root.pid else "java" if proc.name() == "java" else "other"
                times = proc.cpu_times()
                self._cpu[proc.pid] = (kind, times.user + times.system)
                if pss:
                    pss_total += proc.memory_full_info().pss
            except psutil.Error:
                continue
            total += rss
            n, size = kinds.get(kind, (0, 0))
            kinds[kind] = (n + 1, size + rss)
        return total, kinds, pss_total

    def _record(self, pss: bool) -> None:
        value, kinds, pss_value = self.sample(pss)
        with self._lock:
            if value > self._peak:
                self._peak, self._breakdown = value, kinds
            if pss_value is not None:
                self._peak_pss = max(self._peak_pss, pss_value)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self._record(i % self.pss_every == 0)
            i += 1
            self._stop.wait(self.interval)

    def mark(self) -> None:
        with self._lock:
            self._peak, self._peak_pss, self._breakdown = 0, 0, {}
        self._record(True)

    def peak(self) -> int:
        self._record(True)
        with self._lock:
            return self._peak

    def peak_pss(self) -> int:
        with self._lock:
            return self._peak_pss

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per kind of process (root, java, other) and in all."""
        with self._lock:
            out: dict[str, float] = {}
            for kind, seconds in self._cpu.values():
                out[kind] = out.get(kind, 0.0) + seconds
        out["all"] = sum(out.values())
        return out

    def breakdown(self) -> str:
        """e.g. `root 850 + java 1 x 700 + other 2 x 950 MiB` at the RSS peak."""
        with self._lock:
            parts = []
            for kind in ("root", "java", "other"):
                if kind in self._breakdown:
                    n, size = self._breakdown[kind]
                    parts.append(f"{kind} {size / 2**20:,.0f}" if kind == "root" else
                                 f"{kind} {n} x {size / n / 2**20:,.0f}")
            return " + ".join(parts) + " MiB"


def run_sampled(cmd: list[str], env: dict | None = None, exclude: set[int] | None = None,
                timeout: float | None = None, cwd: str | None = None) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run `cmd`, sampling its process tree's RSS: (completed process, wall seconds, peak bytes)."""
    import psutil

    began = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    with TreeRSS(proc.pid, exclude=exclude) as rss:
        out, err = proc.communicate(timeout=timeout)
        peak = rss.peak()
    seconds = time.perf_counter() - began
    run_sampled.last = {"peak_pss": rss.peak_pss(), "breakdown": rss.breakdown(), "cpu": rss.cpu_seconds()}
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seconds, peak
