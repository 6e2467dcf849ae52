"""The ``campaign`` flow (issue 19): many hand-offs in one flow run give what the per-study path gives.

One source site of the small simulated trial (SITE01: counts camera, two phantoms, one
subject's four time points) is cloned by the campaign benchmark's load generator into two
sites under new identities (new HMAC secrets: new UIDs, study keys and subject ids; the same
images and the same trial date shift). Site ``C01`` goes through one ``campaign`` flow run,
with one broken hand-off (its study folder does not exist) among its studies; site ``P01`` is
processed the listener's way, one ``process-study`` run per study, in the same order. Both
under the session Prefect harness.

Checked: the campaign ends *Failed* naming only the broken study, every other study has a
*Completed* ``process-study`` subflow and a processed outcome, and the two sites' latest
warehouse rows agree (calibrations, phantom results and study rows equal; the tables computed
through the CT registration, which is not reproducible run to run, within 5 %, as in
``test_scaleout.py``), although the campaign computes the cycle's dosimetry once, after its
four time points, where the per-study path computes it at every arrival that allows it. A
deferred cycle whose dosimetry fails is a failed ``campaign-dosimetry`` run in status until a
later campaign computes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_campaign import build_rounds, campaign_config
from rntflow.campaign_cli import shard_by_site

CAMPAIGN_SITE, PER_STUDY_SITE = "C01", "P01"
BOOKKEEPING = {"result_version", "computed_at", "row_hash", "input_hash", "superseded_by"}
EQUAL = ("calibrations", "phantom_results")
REGISTRATION_DEPENDENT = ("voi_timepoints", "voi_doses")
REL_TOL, DOSE_REL_TOL = 1e-6, 0.05


@pytest.fixture(scope="module")
def campaign_run(small_trial, prefect_harness, tmp_path_factory):
    from rntflow.core.config import load_config
    from rntflow.flows.campaign import campaign_flow
    from rntflow.flows.process_study import process_study

    out = tmp_path_factory.mktemp("campaign")
    sites = [CAMPAIGN_SITE, PER_STUDY_SITE]
    cfg_path, _cfg = campaign_config(small_trial, out, sites, 1)
    config = load_config(cfg_path)
    rounds = build_rounds(small_trial, out, sites, 1, -500)
    by_site = {s: [h for rnd in rounds for h in rnd if h["site_id"] == s] for s in sites}
    broken = dict(by_site[CAMPAIGN_SITE][-1], study_key="f" * 16, study_dir=str(out / "no-such-study"))
    manifest = out / "manifest.jsonl"
    manifest.write_text(json.dumps(broken) + "\n")
    state = campaign_flow(
        str(cfg_path), studies=by_site[CAMPAIGN_SITE], manifest_path=str(manifest), name="test", return_state=True
    )
    per_study = [process_study(**h, config_path=str(cfg_path), return_state=True) for h in by_site[PER_STUDY_SITE]]
    return {
        "state": state,
        "per_study": per_study,
        "config": config,
        "config_path": str(cfg_path),
        "by_site": by_site,
        "broken": broken,
    }


@pytest.mark.slow
def test_campaign_fails_only_the_broken_study(campaign_run):
    state, by_site, broken = campaign_run["state"], campaign_run["by_site"], campaign_run["broken"]
    assert state.is_failed()
    assert broken["study_key"] in state.message and "1 of 7 studies failed" in state.message
    for h in by_site[CAMPAIGN_SITE]:
        assert h["study_key"] not in state.message
    assert all(s.is_completed() for s in campaign_run["per_study"])


@pytest.mark.slow
def test_every_campaign_study_has_its_own_processed_outcome(campaign_run):
    from rntflow.warehouse.writer import read_latest

    wh = campaign_run["config"].warehouse_dir
    qa = read_latest(wh, "qa_checks", "check_name = 'processing'")
    outcome = dict(zip(qa["study_id"], qa["value_found"], strict=True))
    for h in campaign_run["by_site"][CAMPAIGN_SITE]:
        assert outcome[h["study_key"]] == "processed", h
    assert outcome[campaign_run["broken"]["study_key"]] == "failed"
    runs = read_latest(wh, "flow_runs", "flow_name = 'process-study'")
    done = set(runs.loc[runs["state"] == "Completed", "study_id"])
    assert {h["study_key"] for h in campaign_run["by_site"][CAMPAIGN_SITE]} <= done


@pytest.mark.slow
def test_the_campaign_computes_the_cycle_once_the_per_study_path_at_each_arrival(campaign_run):
    from rntflow.warehouse.writer import read_latest

    wh = campaign_run["config"].warehouse_dir
    assert "cycles' dosimetry failed" not in campaign_run["state"].message
    doses = read_latest(wh, "voi_doses", "site_id IN (?, ?)", [CAMPAIGN_SITE, PER_STUDY_SITE])
    versions = doses.groupby("site_id")["result_version"].agg(["min", "max"])
    assert versions.loc[CAMPAIGN_SITE].tolist() == [1, 1]  # one computation, after the last time point
    assert versions.loc[PER_STUDY_SITE, "max"] > 1  # computed again as time points arrived
    assert doses["final"].all()
    runs = read_latest(wh, "flow_runs", "flow_name = 'campaign-dosimetry'")
    assert runs["site_id"].tolist() == [CAMPAIGN_SITE] and runs["state"].tolist() == ["Completed"]


def _site_rows(wh: Path, table: str, site: str) -> pd.DataFrame:
    """The site's latest rows without identities and bookkeeping, in a stable order."""
    from rntflow.warehouse.writer import read_latest

    df = read_latest(wh, table, "site_id = ?", [site])
    drop = [c for c in df.columns if c in BOOKKEEPING or c.endswith("_id") or c.endswith("_at") or c == "message"]
    df = df.drop(columns=drop)
    keys = [c for c in df.columns if not pd.api.types.is_float_dtype(df[c])]
    return df.sort_values(keys).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("table", EQUAL + REGISTRATION_DEPENDENT)
def test_campaign_rows_equal_the_per_study_path(campaign_run, table):
    wh = campaign_run["config"].warehouse_dir
    got, want = _site_rows(wh, table, CAMPAIGN_SITE), _site_rows(wh, table, PER_STUDY_SITE)
    assert len(got) > 0 and len(got) == len(want), (len(got), len(want))
    floats = [c for c in got.columns if pd.api.types.is_float_dtype(got[c])]
    others = [c for c in got.columns if c not in floats]
    pd.testing.assert_frame_equal(got[others], want[others])
    tol = DOSE_REL_TOL if table in REGISTRATION_DEPENDENT else REL_TOL
    for c in floats:
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=tol, atol=1e-12, err_msg=c)


@pytest.mark.slow
def test_a_deferred_cycle_that_fails_is_shown_until_a_campaign_computes_it(campaign_run, monkeypatch):
    from prefect import task

    import rntflow.flows.dosimetry as dosimetry
    from rntflow.flows.campaign import CYCLE_WORK_FLOW_NAME, run_deferred_cycle_work
    from rntflow.status.model import _current_failed_runs
    from rntflow.warehouse.writer import read_latest

    config, cfg_path = campaign_run["config"], campaign_run["config_path"]
    subject = campaign_run["by_site"][CAMPAIGN_SITE][-1]["subject_id"]
    cycle = [(CAMPAIGN_SITE, subject, 1)]

    @task(name="cycle-dosimetry")
    def broken(*_args, **_kwargs):
        raise RuntimeError("kinetics fit blew up")

    def failed_cycle_work() -> list[dict]:
        runs = read_latest(config.warehouse_dir, "flow_runs", "flow_name = ?", [CYCLE_WORK_FLOW_NAME])
        return [r for r in _current_failed_runs(runs.to_dict("records")) if r["subject_id"] == subject]

    with monkeypatch.context() as m:
        m.setattr(dosimetry, "cycle_dosimetry", broken)
        failures = run_deferred_cycle_work(cfg_path, cycle)
    assert len(failures) == 1 and f"{CAMPAIGN_SITE}/{subject} cycle 1" in failures[0], failures
    (shown,) = failed_cycle_work()
    assert "kinetics fit blew up" in shown["message"] and "rntflow campaign" in shown["message"]
    assert run_deferred_cycle_work(cfg_path, cycle) == []
    assert failed_cycle_work() == []


def test_shard_by_site_keeps_sites_whole_and_order():
    hs = [{"site_id": s, "n": k} for k in range(3) for s in ("A", "B", "C", "D", "E")] + [{"site_id": "A", "n": 3}]
    shards = shard_by_site(hs, 2)
    assert sorted(len(s) for s in shards) == [7, 9]
    sites = [{h["site_id"] for h in s} for s in shards]
    assert not sites[0] & sites[1] and sites[0] | sites[1] == set("ABCDE")
    for s in shards:
        assert s == sorted(s, key=hs.index)  # the caller's order kept
    assert shard_by_site(hs[:1], 3) == [hs[:1], [], []]
    with pytest.raises(ValueError):
        shard_by_site(hs, 0)
