"""A class-data-sharing archive of Spark's classes: a local JVM starts with less CPU.

Starting a local Spark session cost 15.3 JVM CPU-s on 2 cores (measured, issue 17; the JVM of a
cold 1M-alert `request submit` used 42.9 in all): loading and verifying Spark's classes, and
compiling. With this archive it cost 9.6, and 4.7 with the C1-only JIT of `LOCAL_DEFAULT_CONF`.
HotSpot can map classes it loaded in an earlier run from a dynamic CDS archive
(`-XX:ArchiveClassesAtExit` records one when a JVM exits, `-XX:SharedArchiveFile` maps it;
JDK 13+). The archive belongs to one JDK and one Spark class path, so its file name carries
both, in the user's cache folder (`paths.cache_dir()`): a new pyspark or Java simply records a
new one.

No set-up step: a local session started without an archive records one as its JVM exits (a few
seconds after the run, in the background) under a temporary name; the next session promotes it
with an atomic rename once it is complete. A stale or damaged archive cannot break a run: the
JVM's default `-Xshare:auto` checks the archive and ignores one that does not match. Set
`FINK_PIPELINE_CLASS_CACHE=off` to start JVMs without it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from fink_pipeline import paths

# A recording is promoted once its file has not changed for this long: the JVM writes it in a
# few seconds as it exits (130-170 MB), so an older file is complete (or from a JVM killed while
# writing, which -Xshare:auto would then ignore).
_SETTLED_S = 30.0
_JVM_CACHE_OPTIONS = ("-XX:SharedArchiveFile", "-XX:ArchiveClassesAtExit", "-Xshare")
# The JVM prints its warnings (an archive it cannot map...) on stdout by default, where a command
# prints what scripts read (topic names): these options send them to stderr, and leave the
# user's own -Xlog outputs (files) as they are. Local sessions start with them
# (`spark.LOCAL_DEFAULT_CONF`); the archive's options bring them along otherwise.
JVM_WARNINGS_TO_STDERR = "-Xlog:all=off:stdout -Xlog:all=warning:stderr"


def archive_path() -> Path | None:
    """This JDK's and this pyspark's archive (which may not exist yet); None when disabled or
    when neither can be identified."""
    if not paths.StateSettings.load().class_cache:
        return None
    java = _java_binary()
    if java is None:
        return None
    try:
        import pyspark
    except ImportError:
        return None
    stat = java.stat()
    identity = (f"{java}:{stat.st_size}:{stat.st_mtime_ns}:{pyspark.__file__}:{pyspark.__version__}:"
                f"{_spark_jars(Path(pyspark.__file__).parent)}")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return paths.cache_dir() / "jvm" / f"spark-{pyspark.__version__}-{digest}.jsa"


def driver_java_options(options: str) -> str:
    """`options` (spark.driver.extraJavaOptions) plus the archive to map, or to record when
    there is none yet, and the JVM's warnings sent to stderr (`JVM_WARNINGS_TO_STDERR`). Options
    that already choose a class-sharing mode are left as they are."""
    archive = archive_path()
    # Spark splits these options on whitespace: a cache path with a space gets no archive
    if archive is None or any(flag in options for flag in _JVM_CACHE_OPTIONS) or any(c.isspace() for c in str(archive)):
        return options
    routed = options if JVM_WARNINGS_TO_STDERR in options else f"{options} {JVM_WARNINGS_TO_STDERR}"
    try:
        if _promote_recordings(archive) or archive.exists():
            return f"{routed} -XX:SharedArchiveFile={archive}".strip()
        archive.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a cache folder that cannot be written: the JVM starts as it always did
        return options
    recording = archive.with_name(f"{archive.stem}.recording-{os.getpid()}-{time.monotonic_ns()}.jsa")
    # warnings about classes that cannot be archived (signed jars, old class versions) would
    # flood the run's log: only errors, on stderr (stdout is the command's output)
    return (f"{routed} -XX:ArchiveClassesAtExit={recording} -Xlog:cds=error:stderr "
            "-Xlog:cds+dynamic=error:stderr").strip()


def _spark_jars(pyspark_dir: Path) -> str:
    """The jars of Spark's class path as the JVM checks an archive against them: names in the
    directory's own order (the order a `jars/*` class path expands to), sizes and modification
    times. A virtualenv re-created at the same path has the same pyspark but new jar files,
    listed in another order: the JVM refuses an archive of the old ones."""
    home = os.environ.get("SPARK_HOME")
    jars = Path(home) / "jars" if home else pyspark_dir / "jars"
    try:
        with os.scandir(jars) as entries:
            stats = [(e.name, e.stat()) for e in entries if e.name.endswith(".jar")]
    except OSError:
        return ""
    listing = [(name, stat.st_size, stat.st_mtime_ns) for name, stat in stats]
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def _promote_recordings(archive: Path) -> bool:
    """Rename a settled recording of `archive` into place (atomically); whether one was."""
    now = time.time()
    promoted = False
    for recording in sorted(archive.parent.glob(f"{archive.stem}.recording-*.jsa")):
        try:
            settled = now - recording.stat().st_mtime > _SETTLED_S
            if settled and not promoted and recording.stat().st_size > 0:
                os.replace(recording, archive)
                promoted = True
            elif settled:  # another recording of the same archive was promoted
                recording.unlink()
        except FileNotFoundError:  # another process promoted or removed it meanwhile
            continue
    return promoted


def _java_binary() -> Path | None:
    """The java that spark-submit runs: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is None or not candidate.exists():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    return candidate.resolve() if candidate is not None else None
