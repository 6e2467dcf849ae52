"""rntflow.status."""
