"""TARE phantoms through the calibration task (``calibrate_phantom.fn``).

* a 166Ho uniform cylinder on a SPECT (counts) registers a 166Ho sensitivity under the
  protocol ``<trial>:Ho-166`` (177Lu phantoms keep ``<trial>:Lu-177``);
* a 90Y uniform cylinder on a PET (Bq/mL with a planted vendor scale error) registers the
  PET camera's ``bqml_scale_factor``, whatever the series' DecayCorrection;
* a patient PET is then quantified with that calibration (``quantify_pet``).

The NM fixture is the harmonisation tests' (``conftest.make_nm_dataset``), the PET one the
PET reader's (``tests/dicomio/test_pet.write_pet_series``).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from prefect.serializers import PickleSerializer
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from rntflow.core.config import load_config
from rntflow.core.errors import DicomInputError
from rntflow.dicomio.study import load_study
from rntflow.physics.decay import activity_at, decay_integral_s
from rntflow.tasks.calibration import PhantomResult, calibrate_phantom, quantify_pet
from rntflow.tasks.common import protocol_name
from rntflow.tasks.warehouse import load_rows
from tests.configs import demo_config_dict, write_config
from tests.dicomio.test_ct import write_series
from tests.dicomio.test_pet import write_pet_series
from tests.harmonization.conftest import _code, make_nm_dataset, uniform_cylinder_counts

HO166_HALF_LIFE_S = 26.8 * 3600.0
Y90_HALF_LIFE_S = 64.1 * 3600.0
CYLINDER_ML = math.pi * 108.0**2 * 186.0 / 1000.0  # the conftest cylinder: 216 mm x 186 mm
PET_CAMERA = ("SIEMENS", "Biograph Vision 600", "60123")


@pytest.fixture
def config(tmp_path):
    """The demo config with two TARE sites (cameras as in the TARE contract) and paths in tmp."""
    cfg = demo_config_dict(tmp_path)
    cfg.pop("tare_arms", None)
    cfg["sites"] = [s for s in cfg["sites"] if s["id"] not in ("SITE04", "SITE05")] + [
        {
            "id": "SITE04",
            "name": "Utrecht (Siemens Symbia Intevo, 166Ho)",
            "calling_ae_titles": ["SITE04_PACS"],
            "cameras": [{"manufacturer": "SIEMENS", "collimators": ["MELP", "ME"], "post_filters": ["NONE"]}],
        },
        {
            "id": "SITE05",
            "name": "Leuven (Siemens Biograph Vision, 90Y PET)",
            "calling_ae_titles": ["SITE05_PACS"],
            "cameras": [{"manufacturer": "SIEMENS", "model": "Biograph", "system_fwhm_mm": 6.0}],
        },
    ]
    return load_config(write_config(tmp_path, cfg))


def _fill_log(config, rows: list[tuple[str, float, datetime]]) -> None:
    lines = ["subject_id,phantom_type,total_activity_mbq,reference_datetime,volume_ml,sphere_to_background_ratio"]
    lines += [f"{sid},uniform_cylinder,{a:.6g},{ref.isoformat()},{CYLINDER_ML:.1f}," for sid, a, ref in rows]
    config.phantom_fills_file.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- protocol name


def test_protocol_name_follows_the_phantom_radionuclide(config):
    trial = config.trial_id
    assert protocol_name(config) == f"{trial}:Lu-177"  # unchanged without a phantom nuclide
    assert protocol_name(config, "Lu177") == protocol_name(config, "Lu-177") == f"{trial}:Lu-177"
    assert protocol_name(config, "166Ho") == f"{trial}:Ho-166"
    assert protocol_name(config, "Y90") == f"{trial}:Y-90"


# --------------------------------------------------------------------------- 166Ho SPECT


def _ho166_cylinder_study(folder: Path, sensitivity: float, fill_mbq: float, ref: datetime, acq: datetime) -> None:
    """A 166Ho cylinder as a Symbia Intevo writes it (counts, 81 keV + scatter window, ME collimator)."""
    n_rot, ms = 60, 20_000.0
    a0 = activity_at(fill_mbq, ref, acq, HO166_HALF_LIFE_S)
    counts = sensitivity * a0 * decay_integral_s(n_rot * ms / 1000.0, HO166_HALF_LIFE_S)
    values = uniform_cylinder_counts(counts, 14.0, np.random.default_rng(166))
    ds = make_nm_dataset(
        values,
        acq_start=acq,
        admin=ref,
        activity_mbq=fill_mbq,
        windows=[("Ho166_81", 74.9, 87.1), ("scatter", 110.9, 125.1)],
        collimator="MELP",
        corrected=("ATTN", "SCAT"),
        kernel="NONE",
        n_rot=n_rot,
        ms_per_proj=ms,
    )
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber = "SIEMENS NM", "Symbia Intevo", "4001"
    ds.StudyDescription = ds.SeriesDescription = "Ho166 QC cylinder"
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    rp.Radiopharmaceutical = "Ho-166 microspheres"
    rp.RadionuclideCodeSequence = Sequence([_code("129658005", "SCT", "^166^Holmium")])
    rp.RadionuclideHalfLife = HO166_HALF_LIFE_S
    ds.PatientID = "QC-SITE04-CYL"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    (folder / "nm").mkdir(parents=True)
    ds.save_as(folder / "nm" / "recon.dcm", enforce_file_format=True)


def test_ho166_cylinder_registers_a_ho166_calibration(config, tmp_path):
    ref, acq = datetime(2026, 4, 20, 9, 0, 0), datetime(2026, 4, 20, 11, 30, 0)
    _fill_log(config, [("SITE04-PH-CYL", 480.0, ref)])
    study_dir = tmp_path / "dicom" / "SITE04" / "QC-SITE04-CYL" / "20260420_cyl"
    _ho166_cylinder_study(study_dir, 4.0, 480.0, ref, acq)

    out = calibrate_phantom.fn(config, "SITE04", "SITE04-PH-CYL", "ST-HO-CYL", str(study_dir))

    assert isinstance(out, PhantomResult)
    failed = [c for c in out.checks if c["status"] == "fail"]
    assert failed == []
    assert out.phantom_type == "uniform_cylinder" and out.phantom_results == []
    [row] = out.calibrations
    assert row["radionuclide"] == "Ho-166"
    assert row["protocol"] == f"{config.trial_id}:Ho-166"
    assert row["camera_id"] == "SIEMENS NM|Symbia Intevo|4001"
    assert row["bqml_scale_factor"] is None
    assert row["sensitivity_cps_per_mbq"] == pytest.approx(4.0, rel=0.02)
    assert out.study["camera_id"] == out.camera["camera_id"] == row["camera_id"]
    assert out.study["kind"] == "phantom" and out.study["study_id"] == "ST-HO-CYL"
    # a Prefect result: immutable, and it survives Prefect's default result serialiser ("pickle")
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.checks = []
    serializer = PickleSerializer()
    assert serializer.loads(serializer.dumps(out)) == out


def test_phantom_without_a_fill_log_row_is_not_analysed(config, tmp_path):
    ref, acq = datetime(2026, 4, 20, 9, 0, 0), datetime(2026, 4, 20, 11, 30, 0)
    _fill_log(config, [("SITE04-PH-OTHER", 480.0, ref)])  # not this phantom's row
    study_dir = tmp_path / "dicom" / "SITE04" / "QC-SITE04-CYL" / "20260420_cyl"
    _ho166_cylinder_study(study_dir, 4.0, 480.0, ref, acq)

    out = calibrate_phantom.fn(config, "SITE04", "SITE04-PH-CYL", "ST-HO-CYL", str(study_dir))

    assert out.phantom_type == "unknown" and out.calibrations == [] and out.phantom_results == []
    [check] = out.checks
    assert check["check_name"] == "phantom_fill_log" and check["status"] == "fail"
    assert check["study_id"] == "ST-HO-CYL"
    assert out.study["kind"] == "phantom" and out.camera["camera_id"] == "SIEMENS NM|Symbia Intevo|4001"


# --------------------------------------------------------------------------- 90Y PET


def _y90_pet_cylinder(
    folder: Path, fill_mbq: float, ref: datetime, acq: datetime, scale: float, decay_correction: str, **kw
) -> None:
    """A 90Y cylinder on the PET: Bq/mL at acquisition start x ``scale`` (the vendor's error)."""
    spacing = 4.0
    img = uniform_cylinder_counts(1e10, 6.0, np.random.default_rng(90), shape=(72, 80, 80), spacing_mm=spacing)
    a0_bq = activity_at(fill_mbq, ref, acq, Y90_HALF_LIFE_S) * 1e6
    bq_per_ml = img / img.sum() * a0_bq * scale / (spacing**3 / 1000.0)
    write_pet_series(
        folder,
        bq_per_ml,
        spacing_mm=(spacing, spacing, spacing),
        origin_mm=(-158.0, -158.0, -142.0),
        decay_correction=decay_correction,
        dose=fill_mbq * 1e6,
        acq_start=acq,
        admin=ref,
        patient_id="QC-SITE05-CYL",
        radiopharmaceutical="Y-90 chloride",
        **kw,
    )


@pytest.mark.parametrize("decay_correction", ["START", "ADMIN"])
def test_y90_pet_cylinder_registers_the_vendor_scale_factor(config, tmp_path, decay_correction):
    ref, acq = datetime(2026, 4, 21, 8, 0, 0), datetime(2026, 4, 21, 10, 0, 0)
    _fill_log(config, [("SITE05-PH-PET", 2500.0, ref)])
    study_dir = tmp_path / "dicom" / "SITE05" / "QC-SITE05-CYL" / "20260421_pet"
    _y90_pet_cylinder(study_dir, 2500.0, ref, acq, 1.06, decay_correction)

    out = calibrate_phantom.fn(config, "SITE05", "SITE05-PH-PET", "ST-PET-CYL", str(study_dir))

    assert [c for c in out.checks if c["status"] == "fail"] == []
    activity = next(c for c in out.checks if c["check_name"] == "phantom_activity")
    assert activity["status"] == "pass"  # RadionuclideTotalDose read in Bq agrees with the fill log
    [row] = out.calibrations
    assert row["camera_id"] == "|".join(PET_CAMERA)
    assert row["radionuclide"] == "Y-90" and row["protocol"] == f"{config.trial_id}:Y-90"
    assert row["sensitivity_cps_per_mbq"] is None
    assert row["bqml_scale_factor"] == pytest.approx(1.06, rel=0.01)
    assert row["rc_fwhm_mm"] == 6.0 and row["rc_fwhm_source"] == "configured"


def test_pet_in_counts_and_a_study_with_neither_nm_nor_pet_are_errors(config, tmp_path):
    ref, acq = datetime(2026, 4, 21, 8, 0, 0), datetime(2026, 4, 21, 10, 0, 0)
    _fill_log(config, [("SITE05-PH-PET", 2500.0, ref)])
    _y90_pet_cylinder(tmp_path / "cnts", 2500.0, ref, acq, 1.0, "START", units="CNTS")
    with pytest.raises(DicomInputError, match="Units CNTS, not BQML"):
        calibrate_phantom.fn(config, "SITE05", "SITE05-PH-PET", "S1", str(tmp_path / "cnts"))
    write_series(tmp_path / "ct_only")
    with pytest.raises(DicomInputError, match="phantom study without an NM reconstruction"):
        calibrate_phantom.fn(config, "SITE05", "SITE05-PH-PET", "S2", str(tmp_path / "ct_only"))


def test_patient_pet_is_quantified_with_the_camera_calibration(config, tmp_path):
    ref, acq = datetime(2026, 4, 21, 8, 0, 0), datetime(2026, 4, 21, 10, 0, 0)
    _fill_log(config, [("SITE05-PH-PET", 2500.0, ref)])
    _y90_pet_cylinder(tmp_path / "cyl", 2500.0, ref, acq, 1.06, "START")
    patient = tmp_path / "patient"
    truth = np.full((5, 8, 8), 12_000.0)  # Bq/mL at acquisition start
    write_pet_series(patient, truth * 1.06, acq_start=acq + timedelta(days=3), admin=acq + timedelta(days=2))
    pet = load_study(patient).pet
    missing = quantify_pet(config, "SITE05", pet)
    assert missing.image is None and missing.status == "missing" and missing.check.status == "fail"

    out = calibrate_phantom.fn(config, "SITE05", "SITE05-PH-PET", "ST-PET-CYL", str(tmp_path / "cyl"))
    context = {"trial_id": config.trial_id, "site_id": "SITE05"}
    load_rows.fn(str(config.warehouse_dir), "calibrations", out.calibrations, context)
    q = quantify_pet(config, "SITE05", pet)
    assert q.status == "valid" and q.check.check == "tare_calibration" and q.check.status == "pass"
    assert q.calibration.vendor_scale_factor == pytest.approx(1.06, rel=0.01)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(q.image), truth, rtol=0.011)
    again = quantify_pet(config, "SITE05", q.volume)  # a PetVolume already read is not re-read
    assert again.volume is q.volume and again.calibration_id == q.calibration_id
    # the same camera id at another site is another camera: SITE05's calibration does not apply
    elsewhere = quantify_pet(config, "SITE04", q.volume)
    assert elsewhere.image is None and elsewhere.status == "missing" and elsewhere.calibration is None
