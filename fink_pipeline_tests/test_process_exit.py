"""The console commands end with `process_exit.finish`: the exit code, every line written,
exit handlers run and non-daemon threads finished, as a normal exit gives them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_finish_keeps_what_a_normal_exit_does(tmp_path):
    script = textwrap.dedent(f"""\
        import atexit, threading, time
        from pathlib import Path
        from fink_pipeline.cli.process_exit import finish
        atexit.register(lambda: Path({str(tmp_path / "handler")!r}).write_text("ran"))
        def late():
            time.sleep(0.3)
            Path({str(tmp_path / "thread")!r}).write_text("done")
        threading.Thread(target=late).start()
        # an executor left open: its idle workers end at exit (as the interpreter's own exit
        # tells them to), they do not hold the process
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(2)
        pool.submit(time.sleep, 0.1).result()
        for i in range(20000):
            print(f"line {{i}}")
        print("to stderr", file=__import__("sys").stderr)
        finish(3)
        print("never")
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    lines = proc.stdout.splitlines()
    assert len(lines) == 20000 and lines[-1] == "line 19999"
    assert proc.stderr == "to stderr\n"
    assert (tmp_path / "handler").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"


def test_console_commands_exit_with_their_code(tmp_path):
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "fink-pipeline"), "request", "validate", "--survey", "ztff",
                           "--start", "2024-03-01", "--stop", "2024-03-01", "--archive", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: survey: survey 'ztff' is unknown"), proc.stderr
    proc = subprocess.run([str(bin_dir / "fink_datatransfer"), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "-topic" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fink_pipeline.cli.main", "request", "filters", "--survey", "ztf"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count("\n") > 10 and proc.stdout.endswith("\n")
