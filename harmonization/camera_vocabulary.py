"""The names a reconstruction may use, and the header checks of those names (pure).

The trial protocol names one algorithm, collimator and matrix size; a site's
:class:`rntflow.core.config.CameraProfile` widens the accepted names (algorithm, collimator,
matrix, filter strings) and says where its reconstructions evidence scatter correction.
:class:`Vocabulary` is their union; the checks here compare a header with it: collimator,
algorithm (and the protocol's iterations x subsets range), matrix and post-filter, and
:func:`scatter_evidence` finds the accepted evidence of scatter correction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rntflow.core.config import CameraProfile, ImagingProtocol
from rntflow.core.qa import CheckResult
from rntflow.harmonization.headers import NmHeader
from rntflow.harmonization.nm_conventions import normalise_name
from rntflow.harmonization.protocol_checks import match_window, not_stated


@dataclass(frozen=True)
class Vocabulary:
    """The names a reconstruction may use: the trial protocol's plus the camera profile's.

    Attributes
    ----------
    algorithms, collimators, post_filters : tuple of str
        Normalised (:func:`rntflow.harmonization.nm_conventions.normalise_name`).
    matrix_sizes : tuple of int
    scatter_evidence : tuple of str
        Accepted evidence of scatter correction (:data:`rntflow.core.config.SCATTER_EVIDENCE`).
    scatter_text_patterns : tuple of str
    """

    algorithms: tuple[str, ...]
    collimators: tuple[str, ...]
    matrix_sizes: tuple[int, ...]
    post_filters: tuple[str, ...] = ()
    scatter_evidence: tuple[str, ...] = ("corrected_image", "energy_windows")
    scatter_text_patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, protocol: ImagingProtocol, camera: CameraProfile | None = None) -> Vocabulary:
        """The trial-wide names, widened by ``camera`` when given."""
        cam = camera or CameraProfile()
        return cls(
            tuple(dict.fromkeys(normalise_name(a) for a in [protocol.algorithm, *cam.algorithms])),
            tuple(dict.fromkeys(normalise_name(c) for c in [protocol.collimator, *cam.collimators])),
            tuple(dict.fromkeys([protocol.matrix_size, *cam.matrix_sizes])),
            tuple(normalise_name(f) for f in cam.post_filters),
            tuple(cam.scatter_evidence),
            tuple(cam.scatter_text_patterns),
        )


def scatter_evidence(h: NmHeader, protocol: ImagingProtocol, vocab: Vocabulary) -> list[str]:
    """The accepted evidence of scatter correction found in a header (empty: none found).

    ``corrected_image``: CorrectedImage (0028,0051) contains ``SCAT`` (PS3.3 C.8.4.9);
    ``energy_windows``: every protocol scatter window is listed and CorrectedImage is absent
    (a CorrectedImage without ``SCAT`` states that scatter was not corrected, whatever
    windows were acquired); ``text``: a camera-profile
    pattern matches SeriesDescription, ReconstructionMethod, ConvolutionKernel or a private
    text element; ``declared``: the site declares it.
    """
    found = []
    if "corrected_image" in vocab.scatter_evidence and h.scatter_corrected:
        found.append("CorrectedImage SCAT")
    others = list(h.energy_windows[1:])
    if (
        "energy_windows" in vocab.scatter_evidence
        and h.scatter_corrected is None
        and protocol.scatter_windows
        and others
        and all(match_window(w, others, protocol.energy_tolerance_pct) for w in protocol.scatter_windows)
    ):
        found.append("scatter energy windows")
    if "text" in vocab.scatter_evidence:
        for pattern in vocab.scatter_text_patterns:
            hit = next((t for t in h.text_hints if re.search(pattern, t, re.IGNORECASE)), None)
            if hit is not None:
                found.append(f"text {hit!r}")
                break
    if "declared" in vocab.scatter_evidence:
        found.append("declared by the site's camera profile")
    return found


def _energy_class(name: str) -> str:
    s = name.upper().replace("-", "").replace(" ", "")
    for cls in ("LE", "ME", "HE", "UHE"):
        if s.startswith(cls):
            return cls
    if "MEDIUM" in s:
        return "ME"
    if "LOW" in s:
        return "LE"
    if "HIGH" in s:
        return "HE"
    return s


def check_collimator(h: NmHeader, p: ImagingProtocol, vocab: Vocabulary) -> CheckResult:
    exp = " or ".join(vocab.collimators)
    if h.collimator is None:
        return not_stated("collimator", exp, "CollimatorGridName")
    if normalise_name(h.collimator) in vocab.collimators:
        return CheckResult("collimator", "pass", h.collimator, exp, "collimator as protocol")
    if _energy_class(h.collimator) == _energy_class(p.collimator):
        return CheckResult(
            "collimator",
            "warn",
            h.collimator,
            exp,
            "same energy class, different collimator name: confirm the collimator "
            "(or list it in the site's camera profile)",
        )
    return CheckResult("collimator", "fail", h.collimator, exp, "wrong collimator energy class")


def _algorithm_accepted(h: NmHeader, vocab: Vocabulary) -> bool:
    names = [normalise_name(h.algorithm)]
    names += [normalise_name(w) for w in re.split(r"\s+", h.reconstruction_method or "") if w]
    return any(n and n.startswith(a) for n in names for a in vocab.algorithms if a)


def check_algorithm(h: NmHeader, p: ImagingProtocol, vocab: Vocabulary) -> list[CheckResult]:
    out = []
    exp_algo = " or ".join(vocab.algorithms)
    if h.algorithm is None:
        out.append(not_stated("algorithm", exp_algo, "ReconstructionMethod"))
    elif not _algorithm_accepted(h, vocab):
        out.append(
            CheckResult(
                "algorithm",
                "fail",
                h.reconstruction_method or h.algorithm,
                exp_algo,
                "reconstruction algorithm not in the protocol's or the camera profile's vocabulary",
            )
        )
    else:
        out.append(CheckResult("algorithm", "pass", h.reconstruction_method or h.algorithm, exp_algo, "as protocol"))
    exp = f"{p.min_iterations_x_subsets}-{p.max_iterations_x_subsets}"
    if h.iterations is None or h.subsets is None:
        out.append(not_stated("iterations_x_subsets", exp, "iterations/subsets in ReconstructionMethod"))
    else:
        n = h.iterations * h.subsets
        found = f"{n} ({h.iterations}i{h.subsets}s)"
        ok = p.min_iterations_x_subsets <= n <= p.max_iterations_x_subsets
        out.append(
            CheckResult(
                "iterations_x_subsets",
                "pass" if ok else "fail",
                found,
                exp,
                "in range" if ok else "iterations x subsets outside the protocol range",
            )
        )
    return out


def check_matrix(h: NmHeader, vocab: Vocabulary) -> CheckResult:
    exp = " or ".join(f"{m}x{m}" for m in vocab.matrix_sizes)
    if h.matrix_rows is None or h.matrix_cols is None:
        return not_stated("matrix", exp, "Rows/Columns")
    found = f"{h.matrix_rows}x{h.matrix_cols}"
    ok = h.matrix_rows == h.matrix_cols and h.matrix_rows in vocab.matrix_sizes
    return CheckResult(
        "matrix", "pass" if ok else "fail", found, exp, "as protocol" if ok else "matrix size differs from protocol"
    )


def check_filter(h: NmHeader, p: ImagingProtocol, vocab: Vocabulary) -> CheckResult:
    exp = f"<= {p.max_post_filter_fwhm_mm:g} mm FWHM" + (
        " or " + ", ".join(vocab.post_filters) if vocab.post_filters else ""
    )
    pf = h.post_filter
    if pf is None:
        return not_stated("post_filter", exp, "ConvolutionKernel")
    found = f"{pf.text!r}: {pf.describe()}"
    if normalise_name(pf.text) in vocab.post_filters:
        return CheckResult("post_filter", "pass", found, exp, "filter listed in the site's camera profile")
    if not pf.parsed:
        return CheckResult(
            "post_filter",
            "warn",
            found,
            exp,
            "post-filter string not understood: confirm it (or list it in the camera profile)",
        )
    if pf.fwhm_mm is not None:
        ok = pf.fwhm_mm <= p.max_post_filter_fwhm_mm + 1e-9
        return CheckResult(
            "post_filter",
            "pass" if ok else "fail",
            found,
            exp,
            "as protocol" if ok else "post-filter stronger than the protocol allows (RC and harmonisation change)",
        )
    if p.max_post_filter_fwhm_mm <= 0:
        return CheckResult("post_filter", "fail", found, exp, f"{pf.name} post-filter where the protocol allows none")
    return CheckResult(
        "post_filter",
        "warn",
        found,
        exp,
        f"{pf.name} filter cannot be compared with a Gaussian FWHM limit: confirm it "
        "(or list it in the camera profile)",
    )
