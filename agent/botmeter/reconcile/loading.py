"""The invoice's lines into their scratch database (`matching.VENDOR_SCHEMA`): column-wise
through ADBC when `columnar` can read the file exactly (and ADBC can store it), else line by
line through sqlite3. Both give the same rows and the same problems."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from .invoice import Invoice, NotColumnar
from .matching import VENDOR_SCHEMA
from .worker import Worker

#: lines inserted at a time when read line by line
BATCH = 10_000
_SCRATCH = ("PRAGMA journal_mode = OFF", "PRAGMA synchronous = OFF")


def load_invoice(invoice: Invoice, path: Path) -> str:
    """Read `invoice` into a new database at `path`; say how: `columnar` or `lines`."""
    checkpoint = invoice.checkpoint()
    try:
        _ingest(invoice, path)
        return "columnar"
    except NotColumnar:
        invoice.rewind(checkpoint)
        path.unlink(missing_ok=True)
    _insert_lines(invoice, path)
    return "lines"


def _insert_lines(invoice: Invoice, path: Path) -> None:
    insert = ("INSERT INTO vendor (id, session_id, caller, ckey, started, t, dur, dur_field, "
              "dur_text, amount, micro) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in (*_SCRATCH, VENDOR_SCHEMA, "BEGIN"):
            conn.execute(statement)
        for batch in invoice.batches(BATCH):
            conn.executemany(insert, batch)
        conn.execute("COMMIT")


def _ingest(invoice: Invoice, path: Path) -> None:
    """The columnar batches into `path` by ADBC, all of it in a worker thread: Arrow's own
    threads start from it, with Ctrl-C and SIGTERM blocked as in it (one of them taking a
    signal would leave the main thread waiting on, say, a pipe that never ends); ADBC's own
    Ctrl-C handling is for the main thread only, and ours stays in charge. InvoiceError and
    NotColumnar come out of `result()` as they would line by line."""
    stopping = threading.Event()

    def work() -> None:
        try:
            import adbc_driver_sqlite.dbapi as adbc
            import pyarrow as pa

            from .columnar import SCHEMA, arrow_batches
        except ImportError as exc:  # no Arrow for this platform: line by line
            raise NotColumnar(f"no Arrow: {exc}") from None
        batches = arrow_batches(invoice)
        failure: list[BaseException] = []

        def stream() -> Iterator[Any]:
            try:
                for batch in batches:
                    if stopping.is_set():
                        raise KeyboardInterrupt
                    yield batch
            except BaseException as exc:
                failure.append(exc)  # ADBC reports it as its own error: this is the cause
                raise

        try:
            with closing(batches), closing(adbc.connect(str(path), autocommit=True)) as conn, \
                    closing(conn.cursor()) as cursor:
                for statement in (*_SCRATCH, VENDOR_SCHEMA):
                    cursor.execute(statement)
                    cursor.fetchall()
                cursor.adbc_ingest("vendor", pa.RecordBatchReader.from_batches(SCHEMA, stream()),
                                   mode="append")
        except Exception as exc:
            if failure:
                raise failure[0] from None
            # ADBC's own (a full disk: it says only that its ROLLBACK failed): sqlite3 stores
            # the lines, or says what is wrong as it does for a file read line by line
            raise NotColumnar(f"ADBC: {exc}") from None

    worker = Worker("botmeter-invoice", work, stopping.set)
    try:
        worker.result()
    except BaseException:
        worker.cancel()
        raise
