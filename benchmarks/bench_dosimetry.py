"""Benchmark of the pure dosimetry chain on one synthetic 177Lu patient cycle.

SPECT 128x128x128 at 4.8 mm, CT 256x256x150 (2.4 x 2.4 x 4.1 mm), four time points
(4, 24, 96, 168 h). Stages: quantification, rigid CT registration (3 later time points to
the first) with SPECT resampling, TAC fits per VOI and a voxel TIA map, kernel build and
FFT dose, DVH per VOI, uncertainty. Also our convolution vs scipy.signal.fftconvolve.

Also the cold build time of voxel S-value kernels (177Lu, 90Y, 166Ho with photons) at
2.2 and 4.8 mm and the cached call.

Run: ``.venv/bin/python benchmarks/bench_dosimetry.py`` (prints markdown tables);
``--kernels-only`` prints only the kernel table.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import SimpleITK as sitk
from scipy.signal import fftconvolve

from rntflow.dosimetry.dvh import dvh
from rntflow.dosimetry.kernel import clear_kernel_cache, convolve_dose_gy, voxel_s_kernel
from rntflow.dosimetry.kinetics import fit_tac
from rntflow.dosimetry.registration import image_from_array, register_rigid, resample
from rntflow.dosimetry.uncertainty import dose_uncertainty
from rntflow.harmonization.cylinder import to_bq_per_ml

T_H = (4.0, 24.0, 96.0, 168.0)
SPECT_SHAPE, SPECT_MM = (128, 128, 128), 4.8
CT_SHAPE, CT_MM = (150, 256, 256), (2.4, 2.4, 4.1)  # array (z, y, x); spacing (x, y, z)
SENS_CPS_PER_MBQ, DURATION_S = 12.0, 1200.0
LAM_PHYS = math.log(2) / 159.528


def _ellipsoid(shape, spacing_zyx, centre_mm, radii_mm):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    r = sum(((g * s - c) / a) ** 2 for g, s, c, a in zip(grids, spacing_zyx, centre_mm, radii_mm))
    return r <= 1.0


VOIS = {  # centre (z, y, x) mm, radii mm, fraction of 7.4 GBq at t=0 (uptake), clearance 1/h
    "Kidney_L": ((300, 330, 230), (50, 30, 30), 0.012, 0.014),
    "Kidney_R": ((300, 330, 390), (50, 30, 30), 0.012, 0.014),
    "Liver": ((390, 250, 410), (70, 60, 80), 0.05, 0.010),
    "Spleen": ((370, 250, 190), (40, 30, 30), 0.01, 0.012),
    "Lesion_1": ((280, 250, 300), (15, 15, 15), 0.004, 0.006),
}


#: Patient shifts (x, y, z mm) at the four scans.
SHIFTS_MM = [(0.0, 0.0, 0.0), (3.0, -2.0, 4.0), (-2.5, 1.5, -3.0), (1.0, 2.5, 2.0)]


def _synthetic_study(rng: np.random.Generator):
    """Four SPECT count maps (a shifting patient), their masks and a CT: (masks, ct, counts, spect_ref, voxel_ml)."""
    rng = np.random.default_rng(1)
    spacing_zyx = (SPECT_MM,) * 3
    masks = {k: _ellipsoid(SPECT_SHAPE, spacing_zyx, c, r) for k, (c, r, _, _) in VOIS.items()}
    body = _ellipsoid(SPECT_SHAPE, spacing_zyx, (307, 307, 307), (300, 120, 170))
    ct = np.full(CT_SHAPE, -1000.0, np.float32)
    ct_sp_zyx = CT_MM[::-1]
    ct[_ellipsoid(CT_SHAPE, ct_sp_zyx, (307, 307, 307), (300, 120, 170))] = 40.0
    ct[_ellipsoid(CT_SHAPE, ct_sp_zyx, (307, 360, 307), (300, 20, 20))] = 700.0  # spine
    for k, (c, r, _, _) in VOIS.items():
        ct[_ellipsoid(CT_SHAPE, ct_sp_zyx, c, r)] = 30.0 + 10 * len(k)
    voxel_ml = SPECT_MM**3 / 1000.0

    # truth + counts per time point (patient shifts between scans)
    spect_ref = image_from_array(np.zeros(SPECT_SHAPE, np.float32), (SPECT_MM,) * 3)
    counts = []
    for t, shift in zip(T_H, SHIFTS_MM):
        act = np.where(body, 0.002, 0.0) * math.exp(-0.03 * t)  # MBq per voxel
        for k, (_, _, frac, lam) in VOIS.items():
            a_voi = 7400 * frac * (math.exp(-lam * t) - math.exp(-1.0 * t))
            act = np.where(masks[k], a_voi / masks[k].sum(), act)
        img = image_from_array(act.astype(np.float32), (SPECT_MM,) * 3)
        moved = sitk.GetArrayFromImage(
            sitk.Resample(img, spect_ref, sitk.TranslationTransform(3, shift), sitk.sitkLinear, 0.0)
        )
        counts.append(rng.poisson(np.maximum(moved, 0) * SENS_CPS_PER_MBQ * DURATION_S).astype(np.float32))

    return masks, ct, counts, spect_ref, voxel_ml


def _compare_convolutions(tia_map: np.ndarray, kernel) -> None:
    """Our FFT convolution against scipy.signal.fftconvolve on the same map (best of 3)."""
    # convolution: ours vs scipy.signal.fftconvolve
    print(
        "\n| convolution 128^3 with kernel "
        + "x".join(map(str, kernel.s_gy_per_mbq_h.shape))
        + " | time (s) | max rel. diff |\n| --- | ---: | ---: |"
    )
    k = kernel.s_gy_per_mbq_h
    best = {}
    for name, fn in [
        ("rntflow.dosimetry.kernel.convolve_dose_gy (rfftn, 1 worker)", lambda: convolve_dose_gy(tia_map, k)),
        (
            "rntflow.dosimetry.kernel.convolve_dose_gy (rfftn, 2 workers)",
            lambda: convolve_dose_gy(tia_map, k, workers=2),
        ),
        ("scipy.signal.fftconvolve(mode='same')", lambda: fftconvolve(tia_map, k, mode="same")),
    ]:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        best[name] = (min(times), out)
    ref = best["scipy.signal.fftconvolve(mode='same')"][1]
    for name, (sec, out) in best.items():
        print(f"| {name} | {sec:.3f} | {np.max(np.abs(out - ref)) / ref.max():.1e} |")


def main() -> None:
    rows: list[tuple[str, float]] = []
    masks, ct, counts, spect_ref, voxel_ml = _synthetic_study(np.random.default_rng(1))
    print("synthetic data ready", flush=True)
    t0 = time.perf_counter()
    conc = [
        to_bq_per_ml(c, "CNTS", voxel_ml, DURATION_S, 159.528 * 3600.0, sensitivity_cps_per_mbq=SENS_CPS_PER_MBQ)
        for c in counts
    ]
    rows.append(("quantification (4 x 128^3)", time.perf_counter() - t0))

    fixed = image_from_array(ct, CT_MM)
    t0 = time.perf_counter()
    ncc = []
    err_mm = []
    for i in range(1, 4):
        # the later CT is the reference CT seen through the patient's shift
        moving = sitk.Resample(fixed, fixed, sitk.TranslationTransform(3, SHIFTS_MM[i]), sitk.sitkLinear, -1000.0)
        res = register_rigid(
            fixed, moving, shrink_factors=(8, 4, 2), smoothing_sigmas_mm=(8.0, 4.0, 2.0), sampling_fraction=0.05
        )
        ncc.append(res.ncc_after)
        # moving(p) = fixed(p + shift): the registration must find T(p) = p - shift
        err_mm.append(float(np.linalg.norm(np.add(res.translation_mm, SHIFTS_MM[i]))))
        img = image_from_array(conc[i].astype(np.float32), (SPECT_MM,) * 3)
        conc[i] = sitk.GetArrayFromImage(resample(img, spect_ref, res.transform))
    rows.append(
        (
            f"registration CT 256x256x150 x3 + SPECT resampling (NCC after >= {min(ncc):.3f}, max error {max(err_mm):.2f} mm)",
            time.perf_counter() - t0,
        )
    )

    t0 = time.perf_counter()
    fits = {}
    for k, m in masks.items():
        a = [float(c[m].sum()) * voxel_ml / 1e6 for c in conc]  # MBq
        fits[k] = fit_tac(T_H, a, "Lu-177", models=["mono_exp", "bi_exp_uptake"])
    # voxel TIA: trapezoid (linear from 0) + physical tail, vectorised
    stack = np.stack([c * voxel_ml / 1e6 for c in conc])  # MBq per voxel
    t = np.array(T_H)
    w = np.zeros(4)
    w[0] = t[0] / 2
    for i in range(3):
        w[i] += (t[i + 1] - t[i]) / 2
        w[i + 1] += (t[i + 1] - t[i]) / 2
    w[-1] += 1 / LAM_PHYS
    tia_map = np.tensordot(w, stack, axes=1)
    rows.append(("TAC fits (5 VOIs) + voxel TIA map", time.perf_counter() - t0))

    t0 = time.perf_counter()
    kernel = voxel_s_kernel("Lu-177", SPECT_MM, radius_mm=40.0)
    t_kernel = time.perf_counter() - t0
    rows.append((f"kernel build {kernel.s_gy_per_mbq_h.shape}", t_kernel))
    t0 = time.perf_counter()
    dose = convolve_dose_gy(tia_map, kernel, workers=2)
    rows.append(("voxel dose (FFT convolution)", time.perf_counter() - t0))

    t0 = time.perf_counter()
    dvhs = {k: dvh(dose, m, voxel_ml, levels_gy=[2.0, 5.0]) for k, m in masks.items()}
    rows.append(("DVH (5 VOIs)", time.perf_counter() - t0))

    t0 = time.perf_counter()
    budgets = {
        k: dose_uncertainty(
            f.tia_mbq_h, f.tia_sd_mbq_h if math.isfinite(f.tia_sd_mbq_h) else 0.0, calibration_rel=0.05, volume_rel=0.1
        )
        for k, f in fits.items()
    }
    rows.append(("uncertainty (5 VOIs)", time.perf_counter() - t0))

    print("| stage | time (s) |\n| --- | ---: |")
    for name, sec in rows:
        print(f"| {name} | {sec:.3f} |")
    print(f"| **total** | {sum(s for _, s in rows):.3f} |\n")
    print(
        "| VOI | model | TIA (MBq h) | mean dose (Gy) | D2 (Gy) | dose unc. (%) |\n| --- | --- | ---: | ---: | ---: | ---: |"
    )
    for k in masks:
        print(
            f"| {k} | {fits[k].model} | {fits[k].tia_mbq_h:.0f} | {dvhs[k].mean_gy:.2f} | {dvhs[k].d2_gy:.2f} | {100 * budgets[k].dose_rel:.1f} |"
        )

    _compare_convolutions(tia_map, kernel)


def kernel_builds() -> None:
    """Cold build time of the default kernels (photons included) and the cached call."""
    print(
        "| kernel (default radius, photons) | shape | cold build (s) | cached call (s) | "
        "electron energy kept (%) |\n| --- | --- | ---: | ---: | ---: |"
    )
    for name in ("Lu-177", "Y-90", "Ho-166"):
        for sp in (2.2, 4.8):
            clear_kernel_cache()
            t0 = time.perf_counter()
            k = voxel_s_kernel(name, sp)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            voxel_s_kernel(name, sp)
            warm = time.perf_counter() - t0
            kept = 100 * k.electron_energy_in_kernel_mev / k.electron_energy_per_decay_mev
            print(
                f"| {name} {sp} mm | {'x'.join(map(str, k.s_gy_per_mbq_h.shape))} | {cold:.2f} | {warm:.1e} | {kept:.2f} |"
            )
    print()


if __name__ == "__main__":
    kernel_builds()
    if "--kernels-only" not in sys.argv:
        main()
