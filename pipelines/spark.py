"""Starting (or joining) a SparkSession with the settings Winnow needs.

Everything that must be true before the JVM starts lives here: loopback binding, the Python
the workers run, a Java 17 home, a quiet log, no UI. Call `configure_environment()` before
importing anything that may start a JVM.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.parquet.name = org.apache.parquet
logger.parquet.level = error
"""


def _java17_home() -> str | None:
    for candidate in sorted(Path("/usr/lib/jvm").glob("java-17-openjdk*")):
        if (candidate / "bin" / "java").exists():
            return str(candidate)
    return None


def configure_environment() -> None:
    """Set the process environment Spark needs; never overrides what the user set."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if "JAVA_HOME" not in os.environ:
        home = _java17_home()
        if home:
            os.environ["JAVA_HOME"] = home


def _log4j_file() -> str:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"winnow-log4j2-{os.getuid()}.properties"
    if not path.exists() or path.read_text() != _LOG4J2:
        path.write_text(_LOG4J2)
    return str(path)


def get_spark(
    master: str = "local[*]",
    *,
    app_name: str = "winnow",
    shuffle_partitions: int = 8,
    driver_memory: str | None = None,
    conf: Mapping[str, str] | None = None,
):
    """Return a SparkSession for `master`; reuses an active session if one exists.

    A master that starts with ``sc://`` is a Spark Connect address.
    """
    configure_environment()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if master.startswith("sc://"):
        builder = SparkSession.builder.remote(master)
    else:
        log4j = f"-Dlog4j2.configurationFile=file:{_log4j_file()}"
        builder = (
            SparkSession.builder.master(master)
            .config("spark.driver.bindAddress", os.environ["SPARK_LOCAL_IP"])
            .config("spark.driver.host", os.environ["SPARK_LOCAL_IP"])
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.extraJavaOptions", log4j)
            .config("spark.executor.extraJavaOptions", log4j)
            .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
            .config("spark.sql.parquet.summary.metadata.level", "NONE")
        )
        if driver_memory:
            builder = builder.config("spark.driver.memory", driver_memory)
    builder = builder.appName(app_name).config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not master.startswith("sc://"):
        spark.sparkContext.setLogLevel("ERROR")
    return spark
