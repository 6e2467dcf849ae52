"""rntflow: the data platform for multicentre radionuclide-therapy trials."""

__version__ = "0.1.0"
