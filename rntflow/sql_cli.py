"""``rntflow sql``: a read-only DuckDB session on the warehouse catalog, for analysts.

``rntflow sql --config trial.yaml`` opens ``<warehouse>/rntflow.duckdb`` read-only (creating
it first when the warehouse has none yet) with every view of docs/analyst.md. With ``-c SQL``
or ``-f FILE`` it runs the statements and prints each result; otherwise it starts the DuckDB
CLI installed beside this Python (``duckdb``, from the ``duckdb-cli`` package; the catalog is
written in a storage format it reads, :data:`rntflow.warehouse.catalog.STORAGE_COMPATIBILITY`)
or, when there is none (or the warehouse is an ``s3://`` root, whose views read through this
process's pyarrow filesystem), a minimal line-based shell on the duckdb Python package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from rntflow.core.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``sql`` sub-command."""
    p = subparsers.add_parser(
        "sql",
        help="read-only DuckDB session on the warehouse (views of docs/analyst.md)",
        description="Open the warehouse catalog read-only: run -c SQL or -f FILE and print the results, "
        "or start an interactive DuckDB shell. The pipeline is never disturbed by it.",
    )
    p.add_argument("--config", required=True, help="trial YAML (its paths.warehouse)")
    p.add_argument("-c", "--command", dest="sql", default=None, help="SQL to run (several statements: ';')")
    p.add_argument("-f", "--file", type=Path, default=None, help="file of SQL statements to run")
    p.add_argument("--csv", action="store_true", help="print results as CSV instead of tables")
    p.set_defaults(func=run)
    return p


def _statements(text: str) -> list[str]:
    """Split SQL text on ``;`` outside quotes (DuckDB's parser does the rest)."""
    import duckdb

    return [s.query for s in duckdb.extract_statements(text)]


def _print(con, sql: str, csv: bool) -> None:
    rel = con.sql(sql)
    if rel is None:
        return
    if csv:
        frame = rel.df()
        frame.to_csv(sys.stdout, index=False)
    else:
        rel.show(max_width=200, max_rows=10_000)


def _python_shell(con, csv: bool) -> int:
    """A minimal shell: statements end with ``;``; ``.quit`` or end of input leaves."""
    buffer: list[str] = []
    print("rntflow sql (read-only); end statements with ';', .quit to leave", file=sys.stderr)
    while True:
        try:
            line = input("D " if not buffer else "· ")
        except EOFError:
            return 0
        if not buffer and line.strip() in (".quit", ".exit"):
            return 0
        buffer.append(line)
        if line.rstrip().endswith(";"):
            try:
                for stmt in _statements("\n".join(buffer)):
                    _print(con, stmt, csv)
            except Exception as exc:  # noqa: BLE001 - an analyst's SQL error is shown, the shell goes on
                print(f"Error: {exc}", file=sys.stderr)
            buffer = []


def run(args: argparse.Namespace) -> int:
    """Run the statements given, or start a shell; returns the exit code."""
    from rntflow.warehouse.catalog import catalog_path, connect
    from rntflow.warehouse.storage import is_remote

    config = load_config(args.config)
    root = config.warehouse_root
    con = connect(root, read_only=True)
    if args.sql is None and args.file is None:
        cli = Path(sys.executable).parent / "duckdb"
        cli = str(cli) if cli.exists() else shutil.which("duckdb")
        # the external CLI cannot read s3:// views here (they go through this process's
        # pyarrow filesystem), so an S3 warehouse gets the built-in shell
        if cli and sys.stdin.isatty() and not is_remote(root):
            con.close()
            os.execv(cli, [cli, "-readonly", str(catalog_path(root))])
        try:
            return _python_shell(con, args.csv)
        finally:
            con.close()
    try:
        text = args.sql if args.sql is not None else args.file.read_text()
        for stmt in _statements(text):
            _print(con, stmt, args.csv)
    finally:
        con.close()
    return 0
