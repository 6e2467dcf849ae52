"""Flow tests use the session-wide Prefect harness of ``tests/conftest.py`` (``prefect_harness``)."""
