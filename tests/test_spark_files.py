"""What Winnow stages for Spark lives in a private directory, never at a shared name in /tmp."""
from __future__ import annotations

import stat
import tempfile
from pathlib import Path

from pipelines import spark as spark_module


def test_a_file_planted_at_a_predictable_tmp_name_is_not_what_gets_shipped(spark, tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(b"the real model " + tmp_path.name.encode())
    name = f"{spark_module._digest(str(model))[:16]}-model.bin"
    # what another local user could do with the old layout: plant the file under the name it
    # would be staged at, before Winnow gets there
    planted = Path(tempfile.gettempdir()) / "winnow-files" / name
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(b"planted")
    try:
        shipped = spark_module.ship_file(spark, str(model))
    finally:
        planted.unlink()
    assert shipped == name

    def read(_):
        from pyspark import SparkFiles

        yield Path(SparkFiles.get(shipped)).read_bytes()

    assert spark.sparkContext.parallelize([0], 1).mapPartitions(read).collect() == [model.read_bytes()]


def test_the_private_directory_is_the_users_alone_and_holds_the_log_settings():
    private = spark_module.private_dir()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.owner() == Path.home().owner()
    assert Path(spark_module._log4j_file()).parent == private
    assert spark_module.private_dir() == private  # one per process


def test_the_local_driver_heap_is_sized_from_the_machine(monkeypatch):
    gib = 1 << 30
    for memory, heap in ((24 * gib, f"{int(24 * gib * 0.4) >> 20}m"), (gib, "1024m"), (1024 * gib, "65536m")):
        monkeypatch.setattr(spark_module, "machine_memory", lambda m=memory: m)
        assert spark_module.local_driver_memory() == heap


def test_the_test_session_runs_with_the_machine_sized_heap(spark):
    # conftest starts it like a user's local run: no driver_memory, so the machine decides
    assert spark_module.session_settings(spark)["driver_memory"] == spark_module.local_driver_memory()
