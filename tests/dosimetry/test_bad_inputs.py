"""Inputs that cannot go silently wrong (issue 17).

1. A bad-input table: for every public physics function of the dosimetry modules with
   numeric inputs, each argument is given NaN, inf, a negative value, zero (where zero is
   impossible), an unknown nuclide, a density <= 0, or an array with one such voxel; the
   call must raise ``DosimetryInputError`` whose message names the argument.
2. Hypothesis properties: for any floats (NaN and inf included) a function either raises
   ``DosimetryInputError`` or returns a finite, non-negative result - never a NaN.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rntflow.core.errors import DosimetryInputError
from rntflow.dosimetry import bed, density, dvh, kernel, led, limits, organ, single_time_point, tare, uncertainty
from rntflow.physics import nuclides

NAN, INF = float("nan"), float("inf")
SCALAR_BAD = {"nan": NAN, "inf": INF, "-inf": -INF}
UNKNOWN = ("Xx-999", "", None)


def _map(bad: float | None = None, shape=(4, 4, 4)) -> np.ndarray:
    a = np.ones(shape)
    if bad is not None:
        a[tuple(min(i, n - 1) for i, n in zip((1, 2, 3), shape))] = bad
    return a


_K = np.zeros((3, 3, 3))
_K[1, 1, 1] = 1.0
_MASK = np.ones((4, 4, 4), bool)

# function name -> (callable, valid keyword arguments)
CASES: dict[str, tuple] = {
    "kernel.katz_penfold_range_g_per_cm2": (kernel.katz_penfold_range_g_per_cm2, {"energy_mev": 0.5}),
    "kernel.loevinger_parameters": (kernel.loevinger_parameters, {"nuclide_name": "Lu-177"}),
    "kernel.beta_radial_energy_mev_per_cm": (
        kernel.beta_radial_energy_mev_per_cm,
        {"nuclide_name": "Lu-177", "r_cm": np.array([0.01, 0.02]), "density_g_per_ml": 1.04},
    ),
    "kernel.photon_radial_energy_mev_per_cm": (
        kernel.photon_radial_energy_mev_per_cm,
        {"nuclide_name": "Lu-177", "r_cm": np.array([0.01, 0.02]), "density_g_per_ml": 1.04},
    ),
    "kernel.local_electron_energy_mev": (kernel.local_electron_energy_mev, {"nuclide_name": "Lu-177"}),
    "kernel.sphere_geometric_factor": (kernel.sphere_geometric_factor, {"r_cm": np.array([0.1]), "radius_cm": 1.0}),
    "kernel.voxel_s_kernel": (
        kernel.voxel_s_kernel,
        {
            "nuclide_name": "Lu-177",
            "spacing_mm": 4.8,
            "radius_mm": 10.0,
            "density_g_per_ml": 1.04,
            "include_photons": False,
        },
    ),
    "kernel.convolve_dose_gy": (kernel.convolve_dose_gy, {"tia_map_mbq_h": _map(), "kernel": _K}),
    "organ.photon_absorbed_fraction_sphere": (
        organ.photon_absorbed_fraction_sphere,
        {"nuclide_name": "Lu-177", "mass_g": 100.0, "density_g_per_ml": 1.04},
    ),
    "organ.electron_absorbed_fraction_sphere": (
        organ.electron_absorbed_fraction_sphere,
        {"nuclide_name": "Lu-177", "volume_ml": 5.0, "density_g_per_ml": 1.04},
    ),
    "organ.organ_self_dose_gy": (
        organ.organ_self_dose_gy,
        {
            "tia_mbq_h": 1000.0,
            "nuclide_name": "Lu-177",
            "mass_g": 150.0,
            "tia_sd_mbq_h": 10.0,
            "mass_sd_g": 5.0,
            "density_g_per_ml": 1.04,
        },
    ),
    "organ.sphere_dose_gy": (
        organ.sphere_dose_gy,
        {
            "tia_mbq_h": 1000.0,
            "nuclide_name": "Lu-177",
            "volume_ml": 5.0,
            "density_g_per_ml": 1.04,
            "tia_sd_mbq_h": 10.0,
            "volume_sd_ml": 0.5,
        },
    ),
    "organ.scale_s_value_by_mass": (
        organ.scale_s_value_by_mass,
        {"s_ref_gy_per_mbq_h": 1e-3, "mass_ref_g": 300.0, "mass_g": 150.0},
    ),
    "led.led_dose_gy": (
        led.led_dose_gy,
        {"tia_map_mbq_h": _map(), "nuclide_name": "Y-90", "spacing_mm": (4.0, 4.0, 4.0), "density_g_per_ml": 1.04},
    ),
    "bed.bed_gy": (bed.bed_gy, {"dose_gy": 5.0, "alpha_beta_gy": 2.6, "t_rep_h": 2.8, "t_eff_h": 40.0}),
    "density.hu_to_density_g_per_ml": (density.hu_to_density_g_per_ml, {"hu": np.array([0.0, 40.0])}),
    "density.mass_g": (density.mass_g, {"mask": _MASK, "hu": None, "voxel_ml": 0.1, "default_density_g_per_ml": 1.04}),
    "tare.conversion_factor_j_per_gbq": (tare.conversion_factor_j_per_gbq, {"nuclide_name": "Y-90"}),
    "tare.tare_conversion_factor_j_per_gbq": (tare.tare_conversion_factor_j_per_gbq, {"nuclide_name": "Y-90"}),
    "tare.partition_activity_gbq": (
        tare.partition_activity_gbq,
        {
            "tumour_dose_gy": 120.0,
            "normal_mass_kg": 1.5,
            "tumour_mass_kg": 0.2,
            "ratio": 3.0,
            "lung_shunt_fraction": 0.05,
            "cf_j_per_gbq": 49.67,
        },
    ),
    "tare.plan_partition": (
        tare.plan_partition,
        {
            "tumour_dose_gy": 120.0,
            "normal_mass_kg": 1.5,
            "tumour_mass_kg": 0.2,
            "ratio": 3.0,
            "lung_shunt_fraction": 0.05,
            "lung_mass_kg": 1.0,
            "prior_lung_dose_gy": 0.0,
            "product": "TheraSphere",
        },
    ),
    "tare.post_treatment_tia_map_mbq_h": (
        tare.post_treatment_tia_map_mbq_h,
        {"activity_map_mbq": _map(), "nuclide_name": "Y-90", "t_since_admin_h": 2.0},
    ),
    "tare.post_treatment_dose_maps_gy": (
        tare.post_treatment_dose_maps_gy,
        {"activity_map_mbq": _map(), "nuclide_name": "Y-90", "spacing_mm": (4.0, 4.0, 4.0), "t_since_admin_h": 2.0},
    ),
    "uncertainty.dose_uncertainty": (
        uncertainty.dose_uncertainty,
        {
            "tia_mbq_h": 1000.0,
            "tia_fit_sd_mbq_h": 50.0,
            "calibration_rel": 0.05,
            "rc_rel": 0.02,
            "volume_rel": 0.1,
            "dln_rc_dln_v": 0.3,
            "s_value_rel": 0.0,
        },
    ),
    "dvh.dvh": (dvh.dvh, {"dose_gy": _map(), "mask": _MASK, "voxel_ml": 0.1, "density_g_per_ml": _map()}),
    "limits.cumulative_limit_checks": (
        limits.cumulative_limit_checks,
        {"per_cycle": {"Kidney_L": [(5.0, 6.0)]}, "limits": {"Kidney_L": (23.0, 40.0)}},
    ),
    "limits.missing_time_points": (limits.missing_time_points, {"t_h": [4.0, 24.0], "windows": [(24.0, 20.0, 28.0)]}),
    "single_time_point.haenscheid_tia": (
        single_time_point.haenscheid_tia,
        {"t_h": 48.0, "activity_mbq": 50.0, "t_eff_h": 40.0},
    ),
    "single_time_point.madsen_tia": (
        single_time_point.madsen_tia,
        {"t_h": 48.0, "activity_mbq": 50.0, "t_eff_h": 40.0, "t_eff_rel_sd": 0.2},
    ),
    "nuclides.nuclide": (nuclides.nuclide, {"name": "Lu-177"}),
}

# argument -> the impossible values beyond NaN/inf (scalars) or the voxel values (arrays)
NEGATIVE_BAD = {
    "energy_mev",
    "tia_mbq_h",
    "tia_sd_mbq_h",
    "mass_sd_g",
    "volume_sd_ml",
    "dose_gy",
    "s_ref_gy_per_mbq_h",
    "prior_lung_dose_gy",
    "tia_fit_sd_mbq_h",
    "calibration_rel",
    "rc_rel",
    "volume_rel",
    "s_value_rel",
    "t_since_admin_h",
    "t_h",
}
ZERO_BAD = {
    "density_g_per_ml",
    "default_density_g_per_ml",
    "mass_g",
    "mass_ref_g",
    "volume_ml",
    "radius_cm",
    "radius_mm",
    "alpha_beta_gy",
    "t_rep_h",
    "t_eff_h",
    "voxel_ml",
    "tumour_dose_gy",
    "normal_mass_kg",
    "tumour_mass_kg",
    "ratio",
    "cf_j_per_gbq",
    "lung_mass_kg",
    "activity_mbq",
}
ARRAY_NEG_BAD = {"r_cm", "tia_map_mbq_h", "activity_map_mbq"}
ARRAY_ZERO_BAD = {"density_g_per_ml"}


def _table() -> list:
    rows = []
    for fname, (_, kwargs) in CASES.items():
        for arg, good in kwargs.items():
            if arg in ("nuclide_name", "name"):
                rows += [(fname, arg, bad, arg if arg == "nuclide_name" else "nuclide_name") for bad in UNKNOWN]
            elif isinstance(good, np.ndarray) and good.dtype != bool:
                for _label, v in [
                    *SCALAR_BAD.items(),
                    *([("neg", -1.0)] if arg in ARRAY_NEG_BAD else []),
                    *([("zero", 0.0), ("neg", -1.0)] if arg in ARRAY_ZERO_BAD else []),
                ]:
                    bad = good.copy()
                    bad.flat[min(5, bad.size - 1)] = v
                    rows.append((fname, arg, bad, arg))
            elif isinstance(good, (int, float)) and not isinstance(good, bool):
                vals = list(SCALAR_BAD.values())
                vals += [-1.0] if arg in NEGATIVE_BAD | ZERO_BAD or arg == "lung_shunt_fraction" else []
                vals += [0.0] if arg in ZERO_BAD else []
                vals += [1.0] if arg == "lung_shunt_fraction" else []
                rows += [(fname, arg, v, arg) for v in vals]
    # nested and special arguments
    rows += [
        ("limits.cumulative_limit_checks", "per_cycle", {"Kidney_L": [(NAN, 6.0)]}, "dose_gy"),
        ("limits.cumulative_limit_checks", "per_cycle", {"Kidney_L": [(5.0, -1.0)]}, "bed_gy"),
        ("limits.cumulative_limit_checks", "limits", {"Kidney_L": (0.0, None)}, "dose limit"),
        ("limits.missing_time_points", "t_h", [4.0, -2.0], "t_h[1]"),
        ("limits.missing_time_points", "t_h", [NAN], "t_h[0]"),
        ("led.led_dose_gy", "spacing_mm", (4.0, 0.0, 4.0), "spacing_mm"),
        ("led.led_dose_gy", "spacing_mm", (4.0, NAN, 4.0), "spacing_mm"),
        ("kernel.voxel_s_kernel", "spacing_mm", -4.8, "spacing_mm"),
        ("kernel.voxel_s_kernel", "spacing_mm", INF, "spacing_mm"),
        ("tare.post_treatment_dose_maps_gy", "spacing_mm", (4.0, 4.0, -4.0), "spacing_mm"),
        ("density.mass_g", "hu", _map(NAN), "hu"),
        ("led.led_dose_gy", "hu", _map(NAN), "hu"),
        ("dvh.dvh", "dose_gy", _map(NAN), "dose_gy"),
        ("tare.plan_partition", "max_lung_shunt_fraction", NAN, "max_lung_shunt_fraction"),
        ("tare.plan_partition", "lung_cumulative_limit_gy", -5.0, "lung_cumulative_limit_gy"),
        ("tare.tare_conversion_factor_j_per_gbq", "convention", "seed", "cf_convention"),
    ]
    return rows


TABLE = _table()


@pytest.mark.parametrize("fname,arg,bad,named", TABLE, ids=[f"{f}-{a}-{i}" for i, (f, a, _, _) in enumerate(TABLE)])
def test_bad_input_table(fname, arg, bad, named):
    fn, kwargs = CASES[fname]
    fn(**kwargs)  # the baseline is valid
    with pytest.raises(DosimetryInputError, match=re.escape(named)):
        fn(**{**kwargs, arg: bad})


def test_table_covers_every_case_and_kind():
    assert {f for f, *_ in TABLE} == set(CASES)
    kinds = {("nan" if isinstance(b, float) and math.isnan(b) else type(b).__name__) for _, _, b, _ in TABLE}
    assert {"nan", "float", "ndarray", "str", "NoneType"} <= kinds


# ---------------------------------------------------------------- Hypothesis properties
# clinical magnitudes of either sign plus the special values (1e300 g/mL is not a question
# of silent NaN but of overflow, outside what any input file holds)
SPECIAL = st.sampled_from([NAN, INF, -INF, 0.0, -0.0])
TINY = st.sampled_from([1e-6, -1e-6, 1e-9])
ANY = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_subnormal=False).filter(lambda v: abs(v) >= 1e-9), TINY, SPECIAL
)
SANE = st.one_of(
    st.floats(min_value=-1e4, max_value=1e4, allow_subnormal=False).filter(lambda v: abs(v) >= 1e-9), TINY, SPECIAL
)


def _no_silent_nan(fn, *args, **kwargs):
    """Either a named DosimetryInputError or a finite, non-negative result."""
    try:
        out = fn(*args, **kwargs)
    except DosimetryInputError as exc:
        assert "=" in str(exc) or ":" in str(exc)
        return None
    vals = np.asarray(out, dtype=float)
    assert np.all(np.isfinite(vals)) and np.all(vals >= 0), (args, kwargs, out)
    return out


@settings(max_examples=80, deadline=None)
@given(tia=ANY, mass=ANY, sd=st.one_of(st.none(), ANY))
def test_organ_self_dose_never_nan(tia, mass, sd):
    out = _no_silent_nan(
        lambda: organ.organ_self_dose_gy(tia, "Lu-177", mass, tia_sd_mbq_h=sd, include_photons=False).dose_gy
    )
    if out is not None:  # physics: D = TIA E / m exactly (electrons)
        e = nuclides.nuclide("Lu-177").electron_energy_mev
        assert out == pytest.approx(tia * 3.6e9 * e * 1.602176634e-13 / (mass * 1e-3), rel=1e-9, abs=1e-300)


@settings(max_examples=80, deadline=None)
@given(d=ANY, ab=ANY, trep=ANY, teff=ANY)
def test_bed_never_nan(d, ab, trep, teff):
    out = _no_silent_nan(bed.bed_gy, d, ab, trep, teff)
    if out is not None:
        assert out >= d  # BED >= physical dose


@settings(max_examples=80, deadline=None)
@given(dt=SANE, mn=SANE, mt=SANE, r=SANE, lsf=SANE, cf=SANE)
def test_partition_activity_never_nan(dt, mn, mt, r, lsf, cf):
    _no_silent_nan(tare.partition_activity_gbq, dt, mn, mt, r, lsf, cf)


@settings(max_examples=60, deadline=None)
@given(t=SANE, a=SANE, teff=st.one_of(st.none(), SANE))
def test_single_time_point_never_nan(t, a, teff):
    _no_silent_nan(lambda: single_time_point.haenscheid_tia(t, a, teff).tia_mbq_h)
    if teff is not None:
        _no_silent_nan(lambda: single_time_point.madsen_tia(t, a, teff).tia_mbq_h)


@settings(max_examples=60, deadline=None)
@given(voxel=ANY, rho=ANY, t=SANE)
def test_maps_never_nan(voxel, rho, t):
    m = _map(voxel, shape=(3, 3, 3))
    _no_silent_nan(led.led_dose_gy, m, "Y-90", (4.0, 4.0, 4.0), density_g_per_ml=rho)
    _no_silent_nan(kernel.convolve_dose_gy, m, _K)
    _no_silent_nan(tare.post_treatment_tia_map_mbq_h, m, "Ho-166", t)


@settings(max_examples=60, deadline=None)
@given(tia=ANY, fit=ANY, cal=ANY, vol=ANY, slope=ANY)
def test_uncertainty_never_nan(tia, fit, cal, vol, slope):
    _no_silent_nan(
        lambda: uncertainty.dose_uncertainty(tia, fit, calibration_rel=cal, volume_rel=vol, dln_rc_dln_v=slope).dose_rel
    )


@settings(max_examples=40, deadline=None)
@given(rho=st.floats(min_value=0.05, max_value=3.0), tia=st.floats(min_value=0.0, max_value=1e6))
def test_led_dose_scales_as_one_over_density(rho, tia):
    # physics on valid inputs: same energy, mass proportional to density
    ref = led.led_dose_gy(np.full((1, 1, 1), tia), "Lu-177", 4.0, density_g_per_ml=1.0)[0, 0, 0]
    got = led.led_dose_gy(np.full((1, 1, 1), tia), "Lu-177", 4.0, density_g_per_ml=rho)[0, 0, 0]
    assert got == pytest.approx(ref / rho, rel=1e-12, abs=1e-300)
