"""The JVM's class-data-sharing archive: keyed by JDK and pyspark, recorded, promoted, mapped."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from fink_pipeline import jvm_class_cache


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FINK_PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FINK_PIPELINE_CLASS_CACHE", raising=False)
    return tmp_path / "cache"


def _flag(options: str, name: str) -> str | None:
    match = re.search(rf"-XX:{name}=(\S+)", options)
    return match.group(1) if match else None


def test_first_jvm_records_next_maps_after_promotion(cache, monkeypatch):
    options = jvm_class_cache.driver_java_options("-XX:-DontCompileHugeMethods")
    recording = _flag(options, "ArchiveClassesAtExit")
    assert options.startswith("-XX:-DontCompileHugeMethods ")
    assert recording and Path(recording).parent == cache / "jvm" and _flag(options, "SharedArchiveFile") is None
    archive = jvm_class_cache.archive_path()
    assert Path(recording).name.startswith(archive.stem + ".recording-")

    # a JVM still writing it (fresh file): not promoted, this JVM records its own
    Path(recording).write_bytes(b"x" * 10)
    second = jvm_class_cache.driver_java_options("")
    assert _flag(second, "ArchiveClassesAtExit") not in (None, recording)
    assert not archive.exists()

    # settled: the next session promotes one recording, removes the other settled one, maps it
    other = Path(_flag(second, "ArchiveClassesAtExit"))
    other.write_bytes(b"y" * 10)
    old = time.time() - 120
    for path in (Path(recording), other):
        os.utime(path, (old, old))
    third = jvm_class_cache.driver_java_options("")
    assert _flag(third, "SharedArchiveFile") == str(archive)
    assert "ArchiveClassesAtExit" not in third
    assert archive.exists() and not list(archive.parent.glob("*.recording-*"))


def test_key_changes_with_pyspark_version_and_java(cache, monkeypatch, tmp_path):
    import pyspark

    first = jvm_class_cache.archive_path()
    monkeypatch.setattr(pyspark, "__version__", "0.0.0-other")
    assert jvm_class_cache.archive_path() != first
    monkeypatch.undo()
    monkeypatch.setenv("FINK_PIPELINE_CACHE", str(cache))
    fake_home = tmp_path / "jdk"
    (fake_home / "bin").mkdir(parents=True)
    (fake_home / "bin" / "java").write_text("#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(fake_home))
    assert jvm_class_cache.archive_path() not in (None, first)


def test_disabled_or_chosen_by_the_user(cache, monkeypatch):
    assert jvm_class_cache.driver_java_options("-Xshare:off") == "-Xshare:off"
    mine = "-XX:SharedArchiveFile=/somewhere/mine.jsa"
    assert jvm_class_cache.driver_java_options(mine) == mine
    monkeypatch.setenv("FINK_PIPELINE_CLASS_CACHE", "off")
    assert jvm_class_cache.driver_java_options("-Xmx1g") == "-Xmx1g"
    assert not cache.exists()


def test_a_cache_folder_that_cannot_be_used_changes_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FINK_PIPELINE_CACHE", str(blocker / "cache"))
    monkeypatch.delenv("FINK_PIPELINE_CLASS_CACHE", raising=False)
    assert jvm_class_cache.driver_java_options("-Xmx1g") == "-Xmx1g"
    monkeypatch.setenv("FINK_PIPELINE_CACHE", str(tmp_path / "with space"))
    assert jvm_class_cache.driver_java_options("-Xmx1g") == "-Xmx1g"


def _spark_submit_version(options: str) -> subprocess.CompletedProcess:
    """A short JVM on Spark's class path (SparkSubmit --version) started with `options`."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    java = jvm_class_cache._java_binary()
    return subprocess.run([str(java), *options.split(), "-cp", f"{jars}/*", "org.apache.spark.deploy.SparkSubmit",
                           "--version"], capture_output=True, text=True, timeout=120)


def test_a_real_jvm_records_then_maps_spark_classes(cache, monkeypatch):
    recorded = _spark_submit_version(jvm_class_cache.driver_java_options(""))
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    recordings = list((cache / "jvm").glob("*.recording-*.jsa"))
    assert len(recordings) == 1 and recordings[0].stat().st_size > 1_000_000
    monkeypatch.setattr(jvm_class_cache, "_SETTLED_S", 0.0)
    options = jvm_class_cache.driver_java_options("")
    assert "SharedArchiveFile" in options
    mapped = _spark_submit_version(options + " -Xlog:class+load=info")
    assert mapped.returncode == 0, mapped.stderr[-2000:]
    # Spark's own classes come from the archive ("top" layer), not from the jars (lambda
    # classes are generated at run time either way)
    spark_classes = [line for line in mapped.stdout.splitlines()
                     if " org.apache.spark." in line and "$$Lambda" not in line]
    shared = [line for line in spark_classes if "shared objects file (top)" in line]
    assert spark_classes and len(shared) >= 0.9 * len(spark_classes), spark_classes[:5]


def _launcher_jars(home: Path) -> Path:
    """A Spark home holding only Spark's launcher jar (a JVM on it starts in a fraction of a
    second), as a pip install lays it out: <home>/jars/*.jar."""
    import shutil

    import pyspark

    jars = home / "jars"
    jars.mkdir(parents=True)
    for jar in (Path(pyspark.__file__).parent / "jars").glob("spark-launcher*.jar"):
        shutil.copy(jar, jars)
    return jars


def _launcher_jvm(options: str, jars: Path) -> subprocess.CompletedProcess:
    java = jvm_class_cache._java_binary()
    return subprocess.run([str(java), *options.split(), "-cp", f"{jars}/*", "org.apache.spark.launcher.Main"],
                          capture_output=True, text=True, timeout=120)


def test_key_changes_when_spark_jars_are_installed_again(cache, monkeypatch, tmp_path):
    # a virtualenv re-created at the same path has the same pyspark version and path but new
    # jar files: the JVM refuses an archive of the old ones (it checks the class path), so the
    # key must change and a new archive be recorded
    home = tmp_path / "spark"
    _launcher_jars(home)
    monkeypatch.setenv("SPARK_HOME", str(home))
    first = jvm_class_cache.archive_path()
    assert jvm_class_cache.archive_path() == first
    import shutil

    shutil.rmtree(home)
    time.sleep(0.01)
    _launcher_jars(home)
    assert jvm_class_cache.archive_path() != first


def test_jvm_warnings_go_to_stderr_not_to_the_commands_output(cache, monkeypatch, tmp_path):
    # an archive the JVM cannot map (recorded on another class path) makes it warn at start;
    # JVM warnings go to stdout by default, where a command prints what scripts read (topic
    # names): the local session's options send them to stderr
    from fink_pipeline.spark import LOCAL_DEFAULT_CONF

    recorded_on, mapped_on = _launcher_jars(tmp_path / "a"), _launcher_jars(tmp_path / "b")
    archive = tmp_path / "a.jsa"
    _launcher_jvm(f"-XX:ArchiveClassesAtExit={archive} -Xlog:disable", recorded_on)
    assert archive.stat().st_size > 0
    default = _launcher_jvm(f"-XX:SharedArchiveFile={archive}", mapped_on)
    assert "Unable to use shared archive" in default.stdout  # what the options must prevent
    ours = _launcher_jvm(f"{LOCAL_DEFAULT_CONF['spark.driver.extraJavaOptions']} -XX:SharedArchiveFile={archive}",
                         mapped_on)
    assert ours.stdout == "" and "Unable to use shared archive" in ours.stderr
    # a JVM recording an archive (its CDS messages kept to errors) prints nothing there either
    recording = jvm_class_cache.driver_java_options(LOCAL_DEFAULT_CONF["spark.driver.extraJavaOptions"])
    assert "ArchiveClassesAtExit" in recording
    assert _launcher_jvm(recording, mapped_on).stdout == ""
    assert len(list((cache / "jvm").glob("*.recording-*.jsa"))) == 1


def test_users_own_java_options_keep_the_commands_output_clean(cache, tmp_path):
    # a user's spark.driver.extraJavaOptions replace the local defaults: the archive's options
    # bring the warnings' routing along, and the user's own log file stays
    recorded_on, mapped_on = _launcher_jars(tmp_path / "a"), _launcher_jars(tmp_path / "b")
    archive = jvm_class_cache.archive_path()
    archive.parent.mkdir(parents=True)
    _launcher_jvm(f"-XX:ArchiveClassesAtExit={archive} -Xlog:disable", recorded_on)  # another class path
    gc_log = tmp_path / "gc.log"
    options = jvm_class_cache.driver_java_options(f"-Xmx256m -Xlog:gc:file={gc_log}")
    assert _flag(options, "SharedArchiveFile") == str(archive)
    mapped = _launcher_jvm(options, mapped_on)
    assert mapped.stdout == "" and "Unable to use shared archive" in mapped.stderr
    assert gc_log.exists()
