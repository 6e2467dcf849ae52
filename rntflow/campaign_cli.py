"""``rntflow campaign``: process many spooled studies as bulk work on the Prefect server.

The studies are selected from the spool like ``rntflow reprocess`` does (site, subject, study,
arrival date; per site phantoms first), split by site into ``--runs`` shards, and each shard
is started as one run of the ``campaign`` deployment (``flows/campaign.py``): one worker
process per shard instead of one per study. Give as many runs as there are workers.
``--local`` runs the shards one after another in this process instead (no server needed).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The deployment ``rntflow campaign`` starts (deployments/prefect.yaml).
CAMPAIGN_DEPLOYMENT = "campaign/campaign"


def shard_by_site(handoffs: Sequence[Mapping[str, Any]], n: int) -> list[list[Mapping[str, Any]]]:
    """Split hand-offs into ``n`` shards with whole sites, balanced by number of studies.

    A site's studies stay together and in the order given (its phantoms before its time
    points), so every shard can run on its own. Sites go, largest first, to the shard with
    the fewest studies so far (ties: the lower shard). Empty shards are kept (fewer sites
    than ``n``).

    Raises
    ------
    ValueError
        If ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"n={n}: need at least one shard")
    by_site: dict[str, list[int]] = {}
    for k, h in enumerate(handoffs):
        by_site.setdefault(str(h["site_id"]), []).append(k)
    shards: list[list[int]] = [[] for _ in range(n)]
    for site in sorted(by_site, key=lambda s: (-len(by_site[s]), s)):
        i = min(range(n), key=lambda j: (len(shards[j]), j))
        shards[i].extend(by_site[site])
    # the caller's order inside a shard (e.g. rounds across sites: all phantoms first)
    return [[handoffs[k] for k in sorted(shard)] for shard in shards]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``campaign`` sub-command."""
    p = subparsers.add_parser(
        "campaign",
        help="process many spooled studies as bulk work (one campaign flow run per worker)",
        description="Select spooled (de-identified) studies like `rntflow reprocess`, split them by site "
        "into RUNS shards and start one run of the `campaign` deployment per shard (or run them here "
        "with --local). Results are written as new versions.",
    )
    p.add_argument("--config", required=True, type=Path, help="trial YAML")
    p.add_argument("--site", action="append", default=[], metavar="SITE_ID", help="only this site (repeatable)")
    p.add_argument("--subject", action="append", default=[], metavar="SUBJECT_ID", help="only this subject")
    p.add_argument("--study", action="append", default=[], metavar="STUDY_KEY", help="only this study key")
    p.add_argument("--runs", type=int, default=1, help="campaign flow runs (one per worker; default 1)")
    p.add_argument("--deployment", default=CAMPAIGN_DEPLOYMENT, help=f"default {CAMPAIGN_DEPLOYMENT}")
    p.add_argument("--local", action="store_true", help="run here, one shard after another (no server)")
    p.add_argument("--dry-run", action="store_true", help="list the shards, start nothing")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Start (or, ``--local``, run) the campaign shards; 0 when all were started / completed."""
    from rntflow.core.config import load_config
    from rntflow.tasks.reprocess import spooled_studies

    config_path = str(Path(args.config).resolve())
    config = load_config(config_path)
    selected = spooled_studies(
        config.spool_dir,
        site_ids=args.site,
        subject_ids=args.subject,
        study_keys=args.study,
    )
    handoffs = [h.parameters(None) for h in selected]
    for h in handoffs:
        h.pop("config_path")
    shards = [s for s in shard_by_site(handoffs, max(1, args.runs)) if s]
    for i, shard in enumerate(shards, 1):
        sites = sorted({h["site_id"] for h in shard})
        print(f"shard {i}: {len(shard)} studies, sites {', '.join(sites)}")
    if args.dry_run or not shards:
        print(
            f"{len(handoffs)} studies in {len(shards)} shards" + (" (dry run: nothing started)" if args.dry_run else "")
        )
        return 0
    manifests = _write_manifests(config.spool_dir, shards)
    if args.local:
        return _run_local(config, config_path, manifests)
    from prefect.deployments import run_deployment

    for path, shard in zip(manifests, shards, strict=True):
        params = {"config_path": config_path, "manifest_path": str(path), "name": _shard_name(shard)}
        fr = run_deployment(args.deployment, parameters=params, timeout=0)
        print(f"started {args.deployment} run {fr.id} ({len(shard)} studies)")
    return 0


def _shard_name(shard: Sequence[Mapping[str, Any]]) -> str:
    sites = sorted({str(h["site_id"]) for h in shard})
    return sites[0] if len(sites) == 1 else f"{sites[0]}-{sites[-1]} ({len(sites)} sites)"


def _write_manifests(spool_dir: Path, shards: list[list[Mapping[str, Any]]]) -> list[Path]:
    """One JSON Lines manifest per shard under ``<spool>/campaigns/`` (pseudonymous values only)."""
    from datetime import UTC, datetime

    folder = Path(spool_dir) / "campaigns" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder.mkdir(parents=True, exist_ok=False)
    out = []
    for i, shard in enumerate(shards, 1):
        path = folder / f"shard-{i:03d}.jsonl"
        path.write_text("".join(json.dumps(dict(h)) + "\n" for h in shard))
        out.append(path)
    return out


def _run_local(config, config_path: str, manifests: list[Path]) -> int:  # noqa: ANN001 - TrialConfig
    from rntflow.demo import prefect_environment, quiet_logging

    quiet_logging()
    prefect_environment(config)
    from rntflow.flows.campaign import campaign_flow

    rc = 0
    for path in manifests:
        state = campaign_flow(config_path, manifest_path=str(path), name=path.stem, return_state=True)
        print(f"{path.stem}: {state.message}")
        rc |= 0 if state.is_completed() else 1
    return rc
