"""Protocol compliance of a radioembolisation (TARE) study's reconstruction (pure).

A TARE arm images other radionuclides than the trial's 177Lu protocol: the scout (99mTc-MAA
or 166Ho-scout SPECT/CT) and the post-treatment study (166Ho SPECT/CT, or 90Y TOF PET/CT).
Each has its own :class:`rntflow.core.config.ImagingProtocol` in the trial config
(``imaging_protocols``, found by :meth:`rntflow.core.config.TrialConfig.imaging_protocol`
for the study's radionuclide and modality), checked with the very checks of the 177Lu path:

* SPECT (``NM``): :func:`rntflow.harmonization.recon_check.check_reconstruction` (units,
  activity, radionuclide, energy windows, collimator, attenuation and scatter correction,
  algorithm, iterations x subsets, matrix, voxel, post-filter, projections, time point), with
  the site's camera vocabulary.
* PET (``PT``): :func:`check_pet_reconstruction`, the same checks where a PET has the
  attribute (no energy windows, collimator or projections), plus time of flight.

A study without a configured protocol gets a ``warn`` (``reconstruction_protocol``) and no
compliance verdict: it is not silently called compliant.
"""

from __future__ import annotations

from rntflow.core.config import CameraProfile, ImagingProtocol
from rntflow.core.qa import CheckResult
from rntflow.harmonization.camera_vocabulary import Vocabulary, check_algorithm, check_filter, check_matrix
from rntflow.harmonization.headers import NmHeader
from rntflow.harmonization.pet_headers import PetHeader
from rntflow.harmonization.protocol_checks import (
    check_administered_activity,
    check_correction,
    check_pixel_units,
    check_radionuclide,
    check_time_of_flight,
    check_time_point,
    check_voxel,
)
from rntflow.harmonization.recon_check import check_reconstruction

#: The check of a study whose radionuclide and modality have no protocol in the trial config.
NO_PROTOCOL = "reconstruction_protocol"


def check_pet_reconstruction(
    header: NmHeader, pet: PetHeader, protocol: ImagingProtocol, camera: CameraProfile | None = None
) -> list[CheckResult]:
    """Check a PET reconstruction against a PET (``PT``) imaging protocol.

    Parameters
    ----------
    header : NmHeader
        :func:`rntflow.harmonization.pet_headers.pet_nm_header` of the series (units,
        activity, radionuclide, corrections, algorithm, iterations/subsets, matrix, voxel,
        post-filter, times).
    pet : PetHeader
        The series' own header (time of flight).
    protocol : ImagingProtocol
        The protocol of the radionuclide with ``modality: PT``.
    camera : CameraProfile or None
        The PET camera's vocabulary (e.g. ``algorithms: [PSF+TOF]``).

    Returns
    -------
    list of CheckResult
        In a fixed order: pixel_units, administered_activity, radionuclide,
        attenuation_correction, scatter_correction, algorithm, iterations_x_subsets,
        time_of_flight, matrix, voxel_size, post_filter, time_point.
    """
    vocab = Vocabulary.of(protocol, camera)
    out = [check_pixel_units(header), check_administered_activity(header), check_radionuclide(header, protocol)]
    out.append(
        check_correction("attenuation_correction", header.attenuation_corrected, protocol.attenuation_correction)
    )
    out.append(check_correction("scatter_correction", header.scatter_corrected, protocol.scatter_correction))
    out += check_algorithm(header, protocol, vocab)
    out.append(check_time_of_flight(pet.time_of_flight, protocol.time_of_flight))
    out.append(check_matrix(header, vocab))
    out.append(check_voxel(header, protocol))
    out.append(check_filter(header, protocol, vocab))
    out.append(check_time_point(header, protocol))
    return out


def check_tare_reconstruction(
    header: NmHeader,
    modality: str,
    protocol: ImagingProtocol | None,
    camera: CameraProfile | None = None,
    pet: PetHeader | None = None,
) -> list[CheckResult]:
    """The reconstruction checks of a TARE scout or post-treatment study.

    Parameters
    ----------
    header : NmHeader
        The study's NM header (for a PET, its :func:`~rntflow.harmonization.pet_headers.pet_nm_header`).
    modality : {"NM", "PT"}
    protocol : ImagingProtocol or None
        The trial's protocol for the study's radionuclide and modality; ``None`` when the
        config has none.
    camera : CameraProfile or None
    pet : PetHeader or None
        Required for ``PT``.

    Returns
    -------
    list of CheckResult
        :func:`~rntflow.harmonization.recon_check.check_reconstruction` (NM) or
        :func:`check_pet_reconstruction` (PT); a single ``warn`` :data:`NO_PROTOCOL` without
        a protocol.
    """
    if protocol is None:
        what = f"{header.radionuclide or 'unknown radionuclide'} {modality}"
        return [
            CheckResult(
                NO_PROTOCOL,
                "warn",
                what,
                "an imaging_protocols entry for the radionuclide and modality",
                f"no imaging protocol for {what} in the trial config: the reconstruction is not checked",
            )
        ]
    if modality == "PT":
        if pet is None:
            raise ValueError("a PET study needs its PetHeader")
        return check_pet_reconstruction(header, pet, protocol, camera)
    return check_reconstruction(header, protocol, camera)


def protocol_compliant(checks: list[CheckResult]) -> bool | None:
    """``studies.protocol_compliant``: no check failed (``None`` when no protocol was checked)."""
    if any(c.check == NO_PROTOCOL for c in checks):
        return None
    return all(c.status != "fail" for c in checks)
