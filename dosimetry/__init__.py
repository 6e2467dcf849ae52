"""Pure dosimetry physics: no Prefect, no file or network I/O beyond packaged data."""
