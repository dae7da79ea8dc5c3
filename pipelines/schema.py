"""The document schema every stage reads and writes (see ARCHITECTURE.md)."""
from __future__ import annotations

import pyarrow as pa
from pyspark.sql import types as T

# Columns whose names start with "_" are internal bookkeeping (input order) and are not written
# to <output>/kept/.
ORDER_COLUMNS = ("_file", "_row")

DOCUMENT_FIELDS = [
    T.StructField("id", T.StringType(), False),
    T.StructField("text", T.StringType(), True),
    T.StructField("source", T.StringType(), False),
    T.StructField("domain", T.StringType(), False),
    T.StructField("meta", T.MapType(T.StringType(), T.StringType()), True),
]
ORDER_FIELDS = [
    T.StructField("_file", T.IntegerType(), False),   # index of the input file in input order
    T.StructField("_row", T.LongType(), False),       # 1-based line (JSONL) or row (Parquet, datasets)
]
DOCUMENT_SCHEMA = T.StructType(DOCUMENT_FIELDS + ORDER_FIELDS)

# How the read kernel hands rows to Spark: the document plus, for a record that could not be
# read, the reason, the raw record and its file.
READ_SCHEMA = T.StructType(
    DOCUMENT_FIELDS
    + ORDER_FIELDS
    + [
        T.StructField("_error", T.StringType(), True),
        T.StructField("_raw", T.StringType(), True),
        T.StructField("_path", T.StringType(), True),
    ]
)

READ_ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), False),
        pa.field("text", pa.string()),
        pa.field("source", pa.string(), False),
        pa.field("domain", pa.string(), False),
        pa.field("meta", pa.map_(pa.string(), pa.string())),
        pa.field("_file", pa.int32(), False),
        pa.field("_row", pa.int64(), False),
        pa.field("_error", pa.string()),
        pa.field("_raw", pa.string()),
        pa.field("_path", pa.string()),
    ]
)
