"""rntflow.core."""
