"""The demo trial's YAML with its paths in a test's temporary folder (one home for tests that need a config)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def demo_config_dict(tmp_path: Path, inputs: Path | None = None) -> dict:
    """``deployments/trial.example.yaml`` as a dict, every path under ``tmp_path``.

    ``inputs`` (e.g. a simulated trial's folder) holds the enrolment and fill log when given.
    """
    cfg = yaml.safe_load((ROOT / "deployments" / "trial.example.yaml").read_text())
    src = inputs or tmp_path
    cfg["paths"] = {
        "spool": str(tmp_path / "spool"),
        "warehouse": str(tmp_path / "wh"),
        "keys": str(tmp_path / "keys"),
        "enrolment": str(src / "enrolment.csv"),
        "phantom_fills": str(src / "phantom_fills.csv"),
        "prefect_home": str(tmp_path / "prefect"),
        "products": str(tmp_path / "products"),
    }
    return cfg


def write_config(tmp_path: Path, cfg: dict) -> Path:
    """``cfg`` written as ``tmp_path/trial.yaml``; its path."""
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
