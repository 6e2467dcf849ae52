"""Reconstruction checks of TARE studies against their radionuclide's protocol (issue 18).

A 166Ho or 99mTc-MAA SPECT is checked by the 177Lu path's own checks with the nuclide's
protocol; a 90Y PET by the same checks where a PET has the attribute, plus time of flight.
Every deviation is a ``fail`` (non-compliant) or a ``warn`` (not stated); a study whose
radionuclide has no protocol gets a ``warn`` and no verdict, never a silent "compliant".
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
import SimpleITK as sitk

from rntflow.core.config import ImagingProtocol, TrialConfig
from rntflow.core.errors import ConfigError
from rntflow.harmonization.headers import EnergyWindowKev, NmHeader
from rntflow.harmonization.nm_conventions import PixelUnits, parse_post_filter
from rntflow.harmonization.pet_headers import PetHeader, PetVolume, pet_nm_header
from rntflow.harmonization.protocol_checks import check_time_of_flight
from rntflow.harmonization.tare_recon_check import NO_PROTOCOL, check_tare_reconstruction, protocol_compliant

T0 = datetime(2026, 3, 1, 9, 0)

HO = ImagingProtocol(
    radionuclide="Ho-166",
    photopeak_windows=[{"name": "Ho166_81", "center_kev": 81.0, "width_pct": 15.0}],
    scatter_windows=[{"name": "Ho166_scat_118", "center_kev": 118.0, "width_pct": 12.0}],
    collimator="MEGP",
    min_iterations_x_subsets=30,
    matrix_size=80,
    voxel_size_mm=4.8,
    time_points=[
        {"nominal_h": 2, "earliest_h": 0.5, "latest_h": 24},
        {"nominal_h": 72, "earliest_h": 24, "latest_h": 168},
    ],
)
Y90_PET = ImagingProtocol(
    radionuclide="Y-90",
    modality="PT",
    time_of_flight=True,
    min_iterations_x_subsets=10,
    max_iterations_x_subsets=200,
    matrix_size=110,
    voxel_size_mm=4.0,
    max_post_filter_fwhm_mm=5.0,
    time_points=[{"nominal_h": 24, "earliest_h": 2, "latest_h": 72}],
)


def _ho_header(**changes) -> NmHeader:
    """A 166Ho post-treatment SPECT header as a Siemens Symbia writes it (3 days after)."""
    h = NmHeader(
        units="CNTS",
        pixel_units=PixelUnits("CNTS", "default", "RECON TOMO counts"),
        acquisition_start=T0 + timedelta(hours=75),
        acquisition_duration_s=1800.0,
        administration_datetime=T0,
        administered_activity_mbq=2600.0,
        radionuclide="Ho-166",
        energy_windows=(EnergyWindowKev("Ho166_81", 74.9, 87.1), EnergyWindowKev("Ho166_scat_118", 110.9, 125.1)),
        collimator="MELP",
        attenuation_corrected=True,
        scatter_corrected=True,
        algorithm="FLASH3D",
        iterations=8,
        subsets=8,
        post_filter=parse_post_filter("XYZ Gauss 0.0"),
        matrix_rows=80,
        matrix_cols=80,
        voxel_size_mm=(4.8, 4.8, 4.8),
        projections=120,
        time_per_projection_s=30.0,
        manufacturer="SIEMENS NM",
        model="Symbia Intevo Bold",
        reconstruction_method="Flash3D 8i8s",
    )
    return dataclasses.replace(h, **changes)


def _pet(**changes) -> tuple[NmHeader, PetHeader]:
    """A 90Y TOF PET (Siemens Biograph Vision) one day after the administration."""
    ph = PetHeader(
        manufacturer="SIEMENS",
        model="Biograph Vision 600",
        units="BQML",
        decay_correction="START",
        acquisition_start=T0 + timedelta(hours=23),
        frame_duration_s=900.0,
        administration_datetime=T0,
        administered_activity_mbq=1500.0,
        radionuclide="Y-90",
        corrected_image=("NORM", "ATTN", "SCAT", "DECY"),
        series_description="PET Y90 AC",
        matrix_rows=110,
        matrix_cols=110,
        voxel_size_mm=(4.0, 4.0, 4.0),
        reconstruction_method="PSF+TOF 4i5s",
        convolution_kernel="GAUSSIAN 5.0MM",
    )
    ph = dataclasses.replace(ph, **changes)
    return pet_nm_header(PetVolume(sitk.Image(4, 4, 4, sitk.sitkFloat64), ph, 1.0)), ph


def _by_name(checks):
    return {c.check: c for c in checks}


SIEMENS_HO = {
    "manufacturer": "SIEMENS",
    "algorithms": ["Flash3D"],
    "collimators": ["MELP"],
    "post_filters": ["XYZ Gauss 0.0"],
}


def _profile(**kw):
    from rntflow.core.config import CameraProfile

    return CameraProfile(**kw)


def test_a_compliant_166ho_spect_passes_every_check():
    checks = check_tare_reconstruction(_ho_header(), "NM", HO, _profile(**SIEMENS_HO))
    bad = [c for c in checks if c.status != "pass"]
    assert bad == [] and protocol_compliant(checks) is True
    assert {"energy_window_photopeak", "energy_window_scatter", "iterations_x_subsets", "voxel_size"} <= set(
        _by_name(checks)
    )


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"energy_windows": (EnergyWindowKev("Lu177_208", 187.2, 228.8),)}, "energy_window_photopeak"),
        ({"iterations": 2, "subsets": 8}, "iterations_x_subsets"),  # 16 < 30
        ({"voxel_size_mm": (2.4, 2.4, 2.4)}, "voxel_size"),
        ({"scatter_corrected": False}, "scatter_correction"),
        ({"algorithm": "FBP", "reconstruction_method": "FBP"}, "algorithm"),
        ({"matrix_rows": 128, "matrix_cols": 128}, "matrix"),
        ({"acquisition_start": T0 + timedelta(hours=200)}, "time_point"),
    ],
)
def test_a_166ho_spect_off_protocol_fails_and_is_not_compliant(changes, check):
    checks = check_tare_reconstruction(_ho_header(**changes), "NM", HO, _profile(**SIEMENS_HO))
    assert _by_name(checks)[check].status == "fail"
    assert protocol_compliant(checks) is False


def test_a_compliant_90y_tof_pet_passes_every_check():
    nm, ph = _pet()
    assert nm.algorithm == "PSF+TOF" and (nm.iterations, nm.subsets) == (4, 5) and ph.time_of_flight is True
    checks = check_tare_reconstruction(nm, "PT", Y90_PET, _profile(model="Biograph Vision", algorithms=["PSF+TOF"]), ph)
    names = _by_name(checks)
    assert [c for c in checks if c.status != "pass"] == [] and protocol_compliant(checks) is True
    assert "time_of_flight" in names and "energy_window_photopeak" not in names and "collimator" not in names


def test_a_pet_algorithm_not_in_the_vocabulary_fails():
    nm, ph = _pet()
    checks = check_tare_reconstruction(nm, "PT", Y90_PET, None, ph)  # no camera profile: only "OSEM"
    assert _by_name(checks)["algorithm"].status == "fail" and protocol_compliant(checks) is False


@pytest.mark.parametrize(
    ("changes", "check", "status"),
    [
        ({"reconstruction_method": "OSEM3D 4i5s"}, "time_of_flight", "warn"),  # TOF not named anywhere
        ({"convolution_kernel": "GAUSSIAN 8.0MM"}, "post_filter", "fail"),  # stronger than 5 mm
        ({"reconstruction_method": "PSF+TOF 1i2s"}, "iterations_x_subsets", "fail"),  # 2 < 10
        ({"voxel_size_mm": (2.0, 2.0, 2.0)}, "voxel_size", "fail"),
        ({"corrected_image": ("NORM", "ATTN", "DECY")}, "scatter_correction", "fail"),
        ({"units": "CNTS"}, "pixel_units", "pass"),  # pet_nm_header is only made of Bq/mL volumes
    ],
)
def test_a_90y_pet_off_protocol_is_flagged(changes, check, status):
    nm, ph = _pet(**changes)
    profile = _profile(model="Biograph Vision", algorithms=["PSF+TOF", "OSEM3D"])
    checks = check_tare_reconstruction(nm, "PT", Y90_PET, profile, ph)
    assert _by_name(checks)[check].status == status
    assert protocol_compliant(checks) is (status != "fail")


@pytest.mark.parametrize(
    ("text", "tof"),
    [("PSF+TOF 4i5s", True), ("VPFXS 3i16s", True), ("BLOB-OS-TF 3i15s", True), ("OSEM3D 4i5s", None), (None, None)],
)
def test_time_of_flight_from_the_vendors_reconstruction_names(text, tof):
    assert PetHeader(reconstruction_method=text).time_of_flight is tof


def test_time_of_flight_check():
    assert check_time_of_flight(True, True).status == "pass"
    assert check_time_of_flight(None, True).status == "warn"
    assert check_time_of_flight(False, True).status == "fail"
    assert check_time_of_flight(None, False).status == "pass"


def test_no_protocol_for_the_nuclide_is_a_warning_without_a_verdict():
    checks = check_tare_reconstruction(_ho_header(radionuclide="Tc-99m"), "NM", None)
    assert [(c.check, c.status) for c in checks] == [(NO_PROTOCOL, "warn")]
    assert protocol_compliant(checks) is None


def _config(**extra) -> TrialConfig:
    return TrialConfig(
        trial_id="T-1",
        sites=[{"id": "SITE04", "name": "A", "calling_ae_titles": ["A1"]}],
        protocol={
            "photopeak_windows": [{"name": "Lu177_208", "center_kev": 208.0, "width_pct": 20.0}],
            "time_points": [{"nominal_h": 24, "earliest_h": 18, "latest_h": 30}],
        },
        **extra,
    )


def test_the_config_finds_a_protocol_by_radionuclide_and_modality():
    cfg = _config(imaging_protocols=[HO.model_dump(), Y90_PET.model_dump()])
    assert cfg.imaging_protocol("Lu-177").radionuclide == "Lu-177"
    assert cfg.imaging_protocol("Ho-166", "NM") == HO
    assert cfg.imaging_protocol("Y-90", "PT") == Y90_PET
    assert cfg.imaging_protocol("Y-90", "NM") is None  # no bremsstrahlung SPECT protocol configured
    assert cfg.imaging_protocol("Tc-99m") is None


def test_a_spect_protocol_needs_a_photopeak_window_a_pet_protocol_does_not():
    with pytest.raises(ValueError, match="photopeak_windows"):
        ImagingProtocol(radionuclide="Ho-166", time_points=[{"nominal_h": 2, "earliest_h": 1, "latest_h": 3}])
    assert Y90_PET.photopeak_windows == []
    with pytest.raises((ValueError, ConfigError), match="photopeak_windows"):
        _config(
            imaging_protocols=[
                {"radionuclide": "Tc-99m", "time_points": [{"nominal_h": 1, "earliest_h": 0.5, "latest_h": 4}]}
            ]
        )
