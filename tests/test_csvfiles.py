"""The coordinators' CSV files: stripped headers, missing columns named."""

from __future__ import annotations

import io

import pytest

from rntflow.core.csvfiles import dict_reader
from rntflow.core.errors import CalibrationError
from rntflow.core.fills import FILL_COLUMNS, load_phantom_fills


def test_header_is_stripped_and_missing_columns_are_named():
    reader, missing = dict_reader(io.StringIO(" a ,b\n1,2\n"), ["a", "b", "c"])
    assert missing == ["c"]
    assert list(reader) == [{"a": "1", "b": "2"}]


def test_fill_log_without_a_column_is_refused_naming_it(tmp_path):
    path = tmp_path / "fills.csv"
    path.write_text(",".join(FILL_COLUMNS[:-1]) + "\n")
    with pytest.raises(CalibrationError, match=f"missing column.*{FILL_COLUMNS[-1]}"):
        load_phantom_fills(path)
