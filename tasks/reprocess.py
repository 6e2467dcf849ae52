"""Selecting spooled studies to re-process (``rntflow reprocess``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from prefect import task

from rntflow.core.config import TrialConfig
from rntflow.listener.handoff import StudyHandoff, handed_off_studies, handoff_arrivals


def select_studies(
    studies: Sequence[StudyHandoff],
    arrivals: dict[tuple[str, str], float],
    *,
    site_ids: Sequence[str] = (),
    subject_ids: Sequence[str] = (),
    study_keys: Sequence[str] = (),
    since: datetime | None = None,
) -> list[StudyHandoff]:
    """The studies matching every given filter, in hand-off order (per site: phantoms first).

    Parameters
    ----------
    studies : sequence of StudyHandoff
        What the listener handed off (:func:`rntflow.listener.handoff.handed_off_studies`).
    arrivals : dict
        ``(site_id, study_key)`` -> arrival time (s since the epoch).
    site_ids, subject_ids, study_keys : sequence of str
        Keep only these (an empty sequence keeps all).
    since : datetime, optional
        Keep studies that arrived at or after this time (a naive time is UTC).
    """
    cutoff = None
    if since is not None:
        cutoff = (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()
    return [
        h
        for h in studies
        if (not site_ids or h.site_id in site_ids)
        and (not subject_ids or h.subject_id in subject_ids)
        and (not study_keys or h.study_key in study_keys)
        and (cutoff is None or arrivals.get((h.site_id, h.study_key), 0.0) >= cutoff)
    ]


def spooled_studies(
    spool_dir,
    *,
    site_ids: Sequence[str] = (),
    subject_ids: Sequence[str] = (),
    study_keys: Sequence[str] = (),
    since: datetime | None = None,
) -> list[StudyHandoff]:
    """The spool's hand-offs that match every filter (read-only; see :func:`select_studies`)."""
    return select_studies(
        handed_off_studies(spool_dir),
        handoff_arrivals(spool_dir),
        site_ids=site_ids,
        subject_ids=subject_ids,
        study_keys=study_keys,
        since=since,
    )


@task(name="studies-to-reprocess")
def studies_to_reprocess(
    config: TrialConfig, site_ids: list[str], subject_ids: list[str], study_keys: list[str], since: datetime | None
) -> list[StudyHandoff]:
    """Load the spool's hand-offs and select (see :func:`select_studies`)."""
    return spooled_studies(
        config.spool_dir, site_ids=site_ids, subject_ids=subject_ids, study_keys=study_keys, since=since
    )
