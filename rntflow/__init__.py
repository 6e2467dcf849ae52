"""rntflow: the data platform for multicentre radionuclide-therapy trials."""

from rntflow.core.version import RNTFLOW_VERSION as __version__

__all__ = ["__version__"]
