"""The demo trial's YAML with its paths in a test's temporary folder (one home for tests that need a config)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def trial_paths(work: Path, inputs: Path | None = None) -> dict[str, str]:
    """A config's ``paths`` with every folder under ``work``.

    ``inputs`` (e.g. a simulated trial's folder) holds the enrolment and fill log when given,
    else they are looked for in ``work``.
    """
    src = inputs or work
    return {
        "spool": str(work / "spool"),
        "warehouse": str(work / "wh"),
        "keys": str(work / "keys"),
        "enrolment": str(src / "enrolment.csv"),
        "phantom_fills": str(src / "phantom_fills.csv"),
        "prefect_home": str(work / "prefect"),
        "products": str(work / "products"),
    }


def demo_config_dict(tmp_path: Path, inputs: Path | None = None) -> dict:
    """``deployments/trial.example.yaml`` as a dict, its paths :func:`trial_paths`."""
    cfg = yaml.safe_load((ROOT / "deployments" / "trial.example.yaml").read_text())
    cfg["paths"] = trial_paths(tmp_path, inputs)
    return cfg


def write_config(tmp_path: Path, cfg: dict) -> Path:
    """``cfg`` written as ``tmp_path/trial.yaml``; its path."""
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
