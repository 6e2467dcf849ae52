"""The installed rntflow version (recorded with every flow run and report)."""

from importlib.metadata import PackageNotFoundError, version

try:
    RNTFLOW_VERSION: str = version("rntflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    RNTFLOW_VERSION = "0+unknown"
