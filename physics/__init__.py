"""rntflow.physics."""
