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
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""
# Why the gateway logger: PySpark's JVM entry point (PythonGatewayServer) initializes logging as
# an interactive shell does. Spark's `Logging.initializeLogging` then takes the level of the
# entry point's own logger (WARN when the config names none) and, when it differs from the root
# level, prints 'Setting default log level to "WARN".' and 'To adjust logging level use
# sc.setLogLevel(newLevel)...' to stderr and lowers the console to WARN. Naming that logger at
# the root's level (error) keeps both lines and the WARN threshold out; errors still show.


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
    use_jemalloc()
    if "JAVA_HOME" not in os.environ:
        home = _java17_home()
        if home:
            os.environ["JAVA_HOME"] = home


def use_jemalloc() -> None:
    """Arrow's jemalloc allocator for this process and every process it starts (Spark's Python
    workers, the local engine's pool), unless ARROW_DEFAULT_MEMORY_POOL says otherwise.

    pyarrow's default, mimalloc, hands freed pages back to the system soon after a large buffer
    is released, so every batch faults its pages in again; on the 2-core VM that made reading
    a 75 MB lz4 Parquet file take 0.8-4.7 s instead of 0.3-0.45 s, and `winnow dedup` at 4x the
    pool 1.3x slower end to end (bench/README.md). Children read the variable when pyarrow is
    first imported there; this process's pool is switched here if pyarrow is already loaded."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    if os.environ["ARROW_DEFAULT_MEMORY_POOL"] != "jemalloc" or "pyarrow" not in sys.modules:
        return
    import pyarrow as pa

    try:
        if pa.default_memory_pool().backend_name != "jemalloc":
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its own default
        pass


def file_identity(path: str | None) -> tuple | None:
    """(absolute path, size, mtime): what caches of loaded or hashed files are keyed by."""
    if not path or not os.path.isfile(path):
        return None
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


_DIGESTS: dict[tuple, str] = {}  # file identity -> sha256 hex
_PRIVATE: list[Path] = []        # this process's own temporary directory, made on first use


def private_dir() -> Path:
    """A directory only this user can enter (mode 0700, `tempfile.mkdtemp`), one per process,
    removed when the process exits. Nothing Winnow stages for Spark goes to a shared, predictable
    name in /tmp, where another local user could plant a file or a symbolic link first."""
    if not _PRIVATE:
        import atexit
        import shutil
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="winnow-"))
        atexit.register(shutil.rmtree, path, True)
        _PRIVATE.append(path)
    return _PRIVATE[0]


def _digest(path: str) -> str:
    import hashlib

    key = file_identity(path)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def ship_file(spark, path: str) -> str:
    """Send a file (a model, a tokenizer) to every executor once; returns the name to
    `pyspark.SparkFiles.get` it by on a worker: `<sha256[:16]>-<file name>`, so two files of one
    name never collide and an unchanged file is not sent twice."""
    import shutil

    name = f"{_digest(path)[:16]}-{Path(path).name}"
    link = private_dir() / name
    if not link.exists():
        # A hard link, or a copy across file systems; not a symlink: Spark resolves those and
        # ships the file under its target's name.
        try:
            os.link(path, link)
        except OSError:
            shutil.copyfile(path, link)
    try:
        sc = spark.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        sc = None
    if sc is None:
        spark.addArtifacts(str(link), file=True)
    else:
        files = sc._jsc.sc().listFiles()
        if name not in {str(files.apply(i)).rsplit("/", 1)[-1] for i in range(files.size())}:
            sc.addFile(str(link))
    return name


def _log4j_file() -> str:
    """The log4j2 config the JVM starts with, rewritten when this module's text changed."""
    path = private_dir() / "log4j2.properties"
    if not path.exists() or path.read_text() != _LOG4J2:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(_LOG4J2)
        os.replace(tmp, path)
    return str(path)


# --- class-data-sharing archive for the driver JVM --------------------------------------------
# Starting the JVM and SparkContext loads some 15,000 classes from Spark's jars: about 4.4 s to a
# session and 2.1 s more for its first job on the 2-core machine. A dynamic CDS archive
# (JDK 13+: -XX:ArchiveClassesAtExit, then -XX:SharedArchiveFile) maps them pre-parsed instead:
# 2.6 s and 1.1 s. `winnow warm` (run by `make`) builds it once per Java and Spark install; a run
# uses it when it exists and never writes it. A truncated archive crashes the JVM, so an archive
# is promoted to its final name only after the JVM that wrote it has exited and a JVM has
# mapped it; it lives in a directory only this user can write.

ARCHIVE_ENV = "WINNOW_JVM_ARCHIVE"  # "0": never use the archive
_CDS_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # the JVM's archive notes go to stdout otherwise


def _java_binary() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    java = Path(home) / "bin" / "java" if home else None
    if java is None or not java.exists():
        import shutil

        found = shutil.which("java")
        java = Path(found) if found else None
    return java.resolve() if java else None


def jvm_archive_path() -> Path | None:
    """Where the archive for this Java and this Spark install lives (it may not exist): under
    $XDG_CACHE_HOME or ~/.cache, `winnow/jvm/<key>.jsa`, the key hashing the java binary's path,
    size and mtime and the names and sizes of Spark's jars. None without a java binary."""
    import hashlib

    import pyspark

    configure_environment()
    java = _java_binary()
    if java is None:
        return None
    st = java.stat()
    jars = Path(pyspark.__file__).parent / "jars"
    listing = sorted((e.name, e.stat().st_size) for e in os.scandir(jars)) if jars.is_dir() else []
    key = hashlib.sha256(repr((str(java), st.st_size, st.st_mtime_ns, pyspark.__version__, listing)).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "winnow" / "jvm" / f"{key.hexdigest()[:20]}.jsa"


def _safe_dir(path: Path) -> bool:
    """The directory is ours and nobody else can write to it."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _archive_options() -> str:
    """The driver JVM's options that map the archive, or "" when there is none (or it is off)."""
    if os.environ.get(ARCHIVE_ENV) == "0":
        return ""
    try:
        path = jvm_archive_path()
    except OSError:
        return ""
    if path is None or not path.is_file() or not _safe_dir(path.parent):
        return ""
    # a mismatch (another class path) makes the JVM skip the archive; its notes stay quiet
    return f"-XX:SharedArchiveFile={path} -Xshare:auto {_CDS_QUIET}"


def build_jvm_archive(exercise) -> Path:
    """Start a session that records the classes it loads, call `exercise(spark)` (a small run
    that loads what runs load), stop the JVM, check that the archive maps, and move it to
    `jvm_archive_path()`. Must run in a process with no session yet."""
    import uuid

    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        raise RuntimeError("build_jvm_archive needs a process without a SparkSession")
    final = jvm_archive_path()
    if final is None:
        raise RuntimeError("no java binary: set JAVA_HOME")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(final.parent, 0o700)
    tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex}.jsa")
    spark = get_spark(java_options=f"-XX:ArchiveClassesAtExit={tmp} {_CDS_QUIET}")
    try:
        exercise(spark)
    finally:
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        spark.stop()
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        if proc is not None:
            proc.stdin.close()  # the gateway server exits when its stdin closes; the archive is written then
            proc.wait(timeout=300)
    if not archive_maps(tmp):
        tmp.unlink(missing_ok=True)
        raise RuntimeError("the JVM archive that was just written does not map; nothing was installed")
    os.replace(tmp, final)
    return final


def archive_maps(path: Path) -> bool:
    """Whether a JVM starts with `path` as its archive (a truncated or foreign file crashes it)."""
    import subprocess

    java = _java_binary()
    if java is None or not Path(path).is_file():
        return False
    # a bad archive crashes this JVM: its crash report goes to the private directory, not the cwd
    crash = private_dir() / "hs_err_archive_check_%p.log"
    check = subprocess.run([str(java), f"-XX:SharedArchiveFile={path}", "-Xshare:auto", f"-XX:ErrorFile={crash}",
                            "-version"], capture_output=True, timeout=120)
    return check.returncode == 0


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or the cgroup limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


LOCAL_HEAP_SHARE = 0.4   # of the machine's memory, for the local driver's JVM heap
LOCAL_HEAP_MIN_MB = 1024
LOCAL_HEAP_MAX_MB = 64 * 1024


def local_driver_memory() -> str:
    """The JVM heap for a local-mode session when the config names none: 40% of the machine's
    memory (the rest is for the Python workers, which hold a batch's documents too), at least
    1 GiB and at most 64 GiB. Spark's own default is 1 GiB, which one 10 MB document exhausts."""
    mb = int(machine_memory() * LOCAL_HEAP_SHARE) >> 20
    return f"{max(LOCAL_HEAP_MIN_MB, min(LOCAL_HEAP_MAX_MB, mb))}m"


def session_settings(spark) -> dict[str, str | None]:
    """What the manifest records of the session: master and driver heap."""
    try:
        conf = spark.sparkContext.getConf()
        return {"master": conf.get("spark.master"), "driver_memory": conf.get("spark.driver.memory", "1g")}
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return {"master": None, "driver_memory": None}


def get_spark(
    master: str = "local[*]",
    *,
    app_name: str = "winnow",
    shuffle_partitions: int = 8,
    driver_memory: str | None = None,
    conf: Mapping[str, str] | None = None,
    java_options: str | None = None,
):
    """Return a SparkSession for `master`; reuses an active session if one exists.

    A master that starts with ``sc://`` is a Spark Connect address. In local mode without a
    `driver_memory`, the heap is sized from the machine (`local_driver_memory`). The driver JVM
    maps the class-data-sharing archive when `winnow warm` has built one; `java_options` replaces
    those options (build_jvm_archive's recording run).
    """
    configure_environment()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings: dict[str, str] = {"spark.app.name": app_name, "spark.sql.shuffle.partitions": str(shuffle_partitions),
                                "spark.sql.session.timeZone": "UTC"}
    if master.startswith("sc://"):
        builder = SparkSession.builder.remote(master)
        for key, value in {**settings, **(conf or {})}.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()
    log4j = f"-Dlog4j2.configurationFile=file:{_log4j_file()}"
    settings.update({
        "spark.master": master,
        "spark.driver.bindAddress": os.environ["SPARK_LOCAL_IP"],
        "spark.driver.host": os.environ["SPARK_LOCAL_IP"],
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"{log4j} {_archive_options() if java_options is None else java_options}".strip(),
        "spark.executor.extraJavaOptions": log4j,
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.sql.parquet.summary.metadata.level": "NONE",
    })
    if driver_memory is None and master.startswith("local"):
        driver_memory = local_driver_memory()  # local mode: the driver's heap is all there is
    if driver_memory:
        settings["spark.driver.memory"] = driver_memory
    settings.update(conf or {})
    _start_context(settings)
    spark = SparkSession.builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# The JVM prints this when Spark's launcher adds `--add-modules=jdk.incubator.vector`, which
# Spark 4's launcher always does (JavaModuleOptions); no JVM flag turns the notice off.
_INCUBATOR_NOTICE = b"WARNING: Using incubator modules: jdk.incubator.vector\n"


def _forward_stderr(read_fd: int) -> None:
    """Copy the JVM's stderr to ours line by line, less the incubator notice."""
    with os.fdopen(read_fd, "rb") as pipe:
        for line in iter(pipe.readline, b""):
            if line == _INCUBATOR_NOTICE:
                continue
            view = memoryview(line)
            while view:
                view = view[os.write(2, view):]


def _start_context(settings: Mapping[str, str]) -> None:
    """Start the JVM and the SparkContext with `settings`, its stderr passed through a thread
    that drops the incubator notice and forwards everything else at once (a start-up failure's
    message included: the thread reads from before the JVM starts)."""
    import threading

    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf().setAll(list(settings.items()))
    read_fd, write_fd = os.pipe()
    threading.Thread(target=_forward_stderr, args=(read_fd,), name="winnow-jvm-stderr", daemon=True).start()
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stderr": write_fd})
    finally:
        os.close(write_fd)  # the JVM holds its own copy; the thread ends when the JVM does
    SparkContext(conf=conf, gateway=gateway)
