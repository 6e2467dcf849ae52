"""rntflow.analysis."""
