"""De-identification pieces: key-table permissions, UID determinism, date shifting."""

from __future__ import annotations

import stat

from pydicom.uid import CTImageStorage

from rntflow.listener.deid import KeyStore, _shift_da, _shift_dt


def test_keys_dir_private_and_uids_deterministic(tmp_path):
    keys = KeyStore(tmp_path / "keys")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for name in ("secret.key", "keys.sqlite"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    uid = "1.2.826.0.1.3680043.8.498.1234"
    a = keys.uid(uid)
    keys.close()
    again = KeyStore(tmp_path / "keys")  # same secret after a restart: same pseudonym
    assert again.uid(uid) == a and a.startswith("2.25.") and len(a) <= 64
    assert again.uid(CTImageStorage) == CTImageStorage  # a standard UID is not a study identifier
    assert KeyStore(tmp_path / "other").uid(uid) != a  # another secret, another UID
    s1 = again.date_shift_days("SITE01", "P1", "S1")
    assert s1 == again.date_shift_days("SITE01", "P1", "S1") and s1 <= -365
    # one shift for the trial: phantom-to-patient and subject-to-subject intervals stay exact
    assert again.date_shift_days("SITE02", "QC-CYL-SITE02", "SITE02-PH-CYL") == s1
    again.close()
    assert KeyStore(tmp_path / "keys").date_shift_days("SITE03", "P9", "S9") == s1  # kept across restarts


def test_date_shift_keeps_intervals_and_precision():
    assert _shift_da("20240301", -1) == "20240229"  # leap day
    assert _shift_dt("20240301083000.5+0100", -1) == "20240229083000.5+0100"
    assert _shift_dt("2024", -400)[:4] == "2022" and len(_shift_dt("2024", -400)) == 4
    assert _shift_da("garbage", -3) == ""
