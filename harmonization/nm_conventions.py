"""What vendors actually send in NM (SPECT) reconstruction headers, read into one meaning.

Pixel meaning: order of precedence
----------------------------------
The NM Image IOD (DICOM PS3.3 A.5) does not define Units (0054,1001): that attribute
belongs to the PET Series module (PS3.3 C.8.9.1), and most SPECT reconstructions do not
send it. :func:`resolve_pixel_units` therefore decides what a stored pixel means by the
first rule that gives an answer, and records which rule decided:

1. ``rwvm``: RealWorldValueMappingSequence (0040,9096), PS3.3 C.7.6.16.2.11, with the
   unit in MeasurementUnitsCodeSequence (UCUM, PS3.16 CID 7181 / CID 84: ``Bq/ml``,
   ``kBq/ml``, ``{counts}``, ``{cnts}``, ``1/ml`` (counts per mL), ``{counts}/s``) or, when the
   code is absent, in LUTLabel. Slope and intercept apply (per frame where the vendor gives
   per-frame functional groups). When several items are present the quantitative one
   (Bq/mL) is used.
2. ``units``: Units (0054,1001) ``BQML`` or ``CNTS`` where a vendor writes it anyway.
3. ``vendor``: conventions named in :data:`VENDOR_UNIT_HINTS` (the vendors' quantitative
   reconstruction products, recognised by their series text) and a PET-style RescaleType
   (0028,1054) ``BQML``. These are hints, so the QA message asks the site to confirm.
4. ``site``: the trial config's per-site override ``sites[].nm_units``.
5. ``default``: counts, for a reconstructed tomogram (ImageType value 3 ``RECON TOMO``,
   PS3.3 C.8.4.8.1.1) that states no quantitative unit.

Unit slips
----------
RadionuclideTotalDose (0018,1074) is MBq in the NM Isotope module (PS3.3 C.8.4.10.1.7) but
Bq in the PET module, and several vendors write Bq in NM objects as well: a value above
:data:`BQ_THRESHOLD` (1e5 MBq = 100 GBq, beyond any administration) is read as Bq and
converted. ActualFrameDuration (0018,1242) is in ms (PS3.3 C.8.4.12); a value between 1 and
:data:`MAX_SECONDS_READING` that would mean a projection shorter than 1 s is read as seconds.
Both record a note that the reconstruction check reports as a ``warn``.

Post-filter strings
-------------------
:func:`parse_post_filter` reads ConvolutionKernel (0018,1210) strings as vendors write them
(``NONE``, ``GAUSSIAN 5.0MM``, ``XYZ Gauss 0.0``, ``Gaussian 8 mm``, ``Butterworth 0.48 10``,
``Hann 0.8``) into (filter, parameters, unit); what it cannot read is reported unparsed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.dataset import Dataset

UnitsRule = Literal["rwvm", "units", "vendor", "site", "default", "none"]
PixelUnit = Literal["CNTS", "BQML"]

#: RadionuclideTotalDose above this many "MBq" is taken to be in Bq (1e5 MBq = 100 GBq).
BQ_THRESHOLD = 1.0e5
#: ActualFrameDuration values in [1, this] whose ms reading is under 1 s are read as seconds.
MAX_SECONDS_READING = 600.0
#: A projection shorter than this (ms) is implausible for a SPECT acquisition.
MIN_PLAUSIBLE_PROJECTION_MS = 1000.0


# --------------------------------------------------------------------------- dataset access


def get_value(ds: Any, keyword: str) -> Any:
    """``ds.<keyword>``, or ``None`` when absent, empty or malformed."""
    if ds is None:
        return None
    try:
        value = getattr(ds, keyword, None)
    except Exception:  # malformed element: treat as absent
        return None
    if value is None or value == "":
        return None
    return value


def first_item(ds: Any, keyword: str) -> Dataset | None:
    """Item 0 of a sequence, or ``None``."""
    seq = get_value(ds, keyword)
    try:
        return seq[0] if seq else None
    except Exception:
        return None


def as_float(value: Any) -> float | None:
    """A finite float, or ``None``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def as_str(value: Any) -> str | None:
    """Stripped text, or ``None`` when empty."""
    if value is None:
        return None
    s = str(value).strip()
    return s or None


# --------------------------------------------------------------------------- real-world value mapping


@dataclass(frozen=True)
class ValueMapping:
    """One RealWorldValueMappingSequence item.

    Attributes
    ----------
    unit_code : str or None
        MeasurementUnitsCodeSequence CodeValue (UCUM), else LUTLabel.
    slope, intercept : float
        Real value = stored x slope + intercept (1 and 0 when absent).
    units : {"CNTS", "BQML"} or None
        What the unit means to the platform (``None`` when not recognised).
    scale : float
        Factor from the unit to Bq/mL or counts (1000 for kBq/mL).
    per : {"voxel", "ml", "s"}
        ``ml``: counts per mL (multiply by the voxel volume); ``s``: counts per second
        (multiply by the acquisition duration).
    """

    unit_code: str | None
    slope: float
    intercept: float
    units: PixelUnit | None
    scale: float = 1.0
    per: Literal["voxel", "ml", "s"] = "voxel"


# normalised (upper case, no spaces) UCUM code -> (units, scale, per)
_UCUM: dict[str, tuple[PixelUnit, float, str]] = {
    "BQ/ML": ("BQML", 1.0, "voxel"),
    "BQ/CM3": ("BQML", 1.0, "voxel"),
    "BQML": ("BQML", 1.0, "voxel"),
    "KBQ/ML": ("BQML", 1.0e3, "voxel"),
    "KBQ/CM3": ("BQML", 1.0e3, "voxel"),
    "MBQ/ML": ("BQML", 1.0e6, "voxel"),
    "MBQ/CM3": ("BQML", 1.0e6, "voxel"),
    "{COUNTS}": ("CNTS", 1.0, "voxel"),
    "{CNTS}": ("CNTS", 1.0, "voxel"),
    "{COUNT}": ("CNTS", 1.0, "voxel"),
    "CNTS": ("CNTS", 1.0, "voxel"),
    "COUNTS": ("CNTS", 1.0, "voxel"),
    "1/ML": ("CNTS", 1.0, "ml"),
    "/ML": ("CNTS", 1.0, "ml"),
    "{COUNTS}/ML": ("CNTS", 1.0, "ml"),
    "{CNTS}/ML": ("CNTS", 1.0, "ml"),
    "{COUNTS}/S": ("CNTS", 1.0, "s"),
    "{CNTS}/S": ("CNTS", 1.0, "s"),
    "/S": ("CNTS", 1.0, "s"),
    "1/S": ("CNTS", 1.0, "s"),
    "{CPS}": ("CNTS", 1.0, "s"),
    "CPS": ("CNTS", 1.0, "s"),
}


def classify_unit(code: str | None) -> tuple[PixelUnit | None, float, str]:
    """A UCUM (or LUTLabel) unit as ``(units, scale, per)``; ``(None, 1, "voxel")`` if unknown."""
    if not code:
        return None, 1.0, "voxel"
    hit = _UCUM.get(re.sub(r"\s+", "", code).upper())
    return hit if hit is not None else (None, 1.0, "voxel")


def _mapping(item: Dataset) -> ValueMapping:
    unit_item = first_item(item, "MeasurementUnitsCodeSequence")
    code = as_str(get_value(unit_item, "CodeValue")) or as_str(get_value(item, "LUTLabel"))
    units, scale, per = classify_unit(code)
    slope = as_float(get_value(item, "RealWorldValueSlope"))
    intercept = as_float(get_value(item, "RealWorldValueIntercept"))
    return ValueMapping(code, 1.0 if slope is None else slope, intercept or 0.0, units, scale, per)  # type: ignore[arg-type]


def read_value_mappings(ds: Dataset) -> list[ValueMapping]:
    """Every top-level (or shared functional group) RealWorldValueMappingSequence item."""
    items = list(get_value(ds, "RealWorldValueMappingSequence") or [])
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    items += list(get_value(shared, "RealWorldValueMappingSequence") or [])
    return [_mapping(i) for i in items]


def choose_mapping(mappings: Sequence[ValueMapping]) -> ValueMapping | None:
    """The quantitative (Bq/mL) mapping if one exists, else the first recognised, else the first."""
    for want in ("BQML", "CNTS"):
        hit = next((m for m in mappings if m.units == want), None)
        if hit is not None:
            return hit
    return mappings[0] if mappings else None


def per_frame_mappings(ds: Dataset) -> tuple[tuple[float, float], ...] | None:
    """Per-frame (slope, intercept) from PerFrameFunctionalGroupsSequence, or ``None``.

    Only returned when every frame carries a mapping (PS3.3 C.7.6.16.2.11 in a per-frame
    functional group); frames share the unit of the chosen top-level mapping.
    """
    frames = get_value(ds, "PerFrameFunctionalGroupsSequence")
    if not frames:
        return None
    out = []
    for fg in frames:
        item = first_item(fg, "RealWorldValueMappingSequence")
        if item is None:
            return None
        m = _mapping(item)
        out.append((m.slope, m.intercept))
    return tuple(out)


# --------------------------------------------------------------------------- pixel meaning


@dataclass(frozen=True)
class VendorUnitHint:
    """A vendor convention that names a quantitative reconstruction by its series text.

    Attributes
    ----------
    manufacturer : str
        Upper-case text the Manufacturer must contain ("" for any).
    pattern : str
        Regular expression (case-insensitive) searched in SeriesDescription,
        ReconstructionMethod and DerivationDescription.
    units : {"CNTS", "BQML"}
    source : str
        Where the convention is documented.
    """

    manufacturer: str
    pattern: str
    units: PixelUnit
    source: str


#: Vendor quantitative SPECT products, by name (Peters et al. 2019, "Towards standardization
#: of absolute SPECT/CT quantification: a multi-center and multi-vendor phantom study",
#: EJNMMI Phys 6:29, Table 3: Siemens xSPECT Quant, GE Q.Metrix, Hermes SUV SPECT).
VENDOR_UNIT_HINTS: tuple[VendorUnitHint, ...] = (
    VendorUnitHint("SIEMENS", r"x\s*SPECT\s*Quant", "BQML", "Siemens xSPECT Quant (Bq/mL)"),
    VendorUnitHint("GE", r"Q\.?\s*Metrix", "BQML", "GE Q.Metrix quantitative SPECT (Bq/mL)"),
    VendorUnitHint("", r"SUV[\s_-]*SPECT", "BQML", "Hermes SUV SPECT (Bq/mL)"),
)

_SITE_UNITS: dict[str, PixelUnit] = {"counts": "CNTS", "bq_per_ml": "BQML"}
_UNIT_WORDS = {"CNTS": "counts", "BQML": "Bq/mL"}


@dataclass(frozen=True)
class PixelUnits:
    """The resolved meaning of an NM reconstruction's real-world pixel values.

    Attributes
    ----------
    units : {"CNTS", "BQML"} or None
        Counts per voxel or Bq/mL after :attr:`scale`; ``None`` when no rule decided.
    rule : {"rwvm", "units", "vendor", "site", "default", "none"}
        The rule of the order of precedence (module docstring) that decided.
    detail : str
        What was read, for QA (``RWVM Bq/ml``, ``Units BQML``, ...).
    scale : float
        Multiply real-world values by this to reach counts or Bq/mL (kBq/mL: 1000).
    per : {"voxel", "ml", "s"}
        Counts per mL or per second still to be multiplied by voxel volume or duration.
    confident : bool
        ``False`` for vendor hints and for a default on a DERIVED image (QA warns).
    notes : tuple of str
        Disagreements between sources (e.g. Units CNTS beside RWVM Bq/ml).
    """

    units: PixelUnit | None
    rule: UnitsRule
    detail: str
    scale: float = 1.0
    per: Literal["voxel", "ml", "s"] = "voxel"
    confident: bool = True
    notes: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """One sentence: ``units counts from RWVM {counts}``."""
        what = _UNIT_WORDS.get(self.units or "", "unknown")
        return f"units {what} from {self.detail}"


def _image_type(ds: Dataset) -> tuple[str, ...]:
    it = get_value(ds, "ImageType")
    if it is None:
        return ()
    values = [it] if isinstance(it, str) else list(it)
    return tuple(str(v).strip().upper() for v in values)


def _vendor_hint(ds: Dataset) -> tuple[PixelUnit, str] | None:
    rescale_type = (as_str(get_value(ds, "RescaleType")) or "").upper().replace(" ", "")
    if rescale_type in ("BQML", "BQ/ML"):
        return "BQML", f"vendor convention: RescaleType {rescale_type}"
    manufacturer = (as_str(get_value(ds, "Manufacturer")) or "").upper()
    text = " ".join(
        filter(
            None,
            (as_str(get_value(ds, k)) for k in ("SeriesDescription", "ReconstructionMethod", "DerivationDescription")),
        )
    )
    for hint in VENDOR_UNIT_HINTS:
        if hint.manufacturer in manufacturer and re.search(hint.pattern, text, re.IGNORECASE):
            return hint.units, f"vendor convention: {hint.source}"
    return None


def resolve_pixel_units(ds: Dataset, site_units: str | None = None) -> PixelUnits:
    """Decide what an NM reconstruction's pixels mean (order of precedence: module docstring).

    Parameters
    ----------
    ds : pydicom.Dataset
        The NM reconstruction (pixel data not needed).
    site_units : {"counts", "bq_per_ml"} or None
        The trial config's ``sites[].nm_units`` for the sending site.

    Returns
    -------
    PixelUnits
        Never raises; ``units`` is ``None`` (rule ``none``) when nothing decides.
    """
    notes: list[str] = []
    units_attr = (as_str(get_value(ds, "Units")) or "").upper() or None
    mapping = choose_mapping(read_value_mappings(ds))
    if mapping is not None and mapping.units is not None:
        if units_attr in ("CNTS", "BQML") and units_attr != mapping.units:
            notes.append(f"Units {units_attr} disagrees with RWVM {mapping.unit_code}: RWVM used")
        return PixelUnits(
            mapping.units, "rwvm", f"RWVM {mapping.unit_code}", mapping.scale, mapping.per, True, tuple(notes)
        )
    if mapping is not None and mapping.unit_code:
        notes.append(f"RWVM unit {mapping.unit_code!r} not recognised")
    if units_attr in ("CNTS", "BQML"):
        return PixelUnits(units_attr, "units", f"Units {units_attr}", notes=tuple(notes))  # type: ignore[arg-type]
    if units_attr:
        notes.append(f"Units {units_attr!r} is neither CNTS nor BQML")
    hint = _vendor_hint(ds)
    site = _SITE_UNITS.get(site_units or "")
    if hint is not None:
        if site is not None and site != hint[0]:
            notes.append(f"sites[].nm_units {site_units} disagrees with the {hint[1]}")
        return PixelUnits(hint[0], "vendor", hint[1], confident=False, notes=tuple(notes))
    if site is not None:
        return PixelUnits(site, "site", f"site override sites[].nm_units = {site_units}", notes=tuple(notes))
    itype = _image_type(ds)
    if len(itype) >= 3 and itype[2] in ("RECON TOMO", "RECON GATED TOMO"):
        original = itype[:2] == ("ORIGINAL", "PRIMARY")
        detail = (
            ("default for ORIGINAL\\PRIMARY\\" if original else "default for ")
            + itype[2]
            + " without quantitative units"
        )
        return PixelUnits("CNTS", "default", detail, confident=original, notes=tuple(notes))
    return PixelUnits(
        None, "none", "no RWVM, Units, vendor convention, site override or RECON TOMO image type", notes=tuple(notes)
    )


# --------------------------------------------------------------------------- unit slips


def read_total_dose_mbq(raw: float | None) -> tuple[float | None, str | None]:
    """RadionuclideTotalDose to MBq, and a note when it had to be read as Bq.

    Parameters
    ----------
    raw : float or None
        The attribute's value (MBq by PS3.3 C.8.4.10.1.7).

    Returns
    -------
    (float or None, str or None)
        Activity (MBq) and the note (``None`` when the value was taken as MBq).
    """
    if raw is None:
        return None, None
    if raw > BQ_THRESHOLD:
        mbq = raw / 1.0e6
        return mbq, (
            f"RadionuclideTotalDose {raw:.4g} is implausible in MBq (> {BQ_THRESHOLD:g}): read as Bq, {mbq:.5g} MBq"
        )
    return raw, None


def read_frame_duration_s(raw_ms: float | None) -> tuple[float | None, str | None]:
    """ActualFrameDuration (ms by PS3.3) to seconds, and a note when it had to be read as s.

    A value whose ms reading is under :data:`MIN_PLAUSIBLE_PROJECTION_MS` but that lies in
    [1, :data:`MAX_SECONDS_READING`] is taken to be in seconds (a vendor slip).
    """
    if raw_ms is None or not raw_ms > 0:
        return None, None
    if raw_ms < MIN_PLAUSIBLE_PROJECTION_MS and 1.0 <= raw_ms <= MAX_SECONDS_READING:
        return raw_ms, (
            f"ActualFrameDuration {raw_ms:g} would be {raw_ms:g} ms per projection: read as seconds ({raw_ms:g} s)"
        )
    note = None
    if raw_ms < MIN_PLAUSIBLE_PROJECTION_MS:
        note = f"ActualFrameDuration {raw_ms:g} ms per projection is implausibly short"
    return raw_ms / 1000.0, note


# --------------------------------------------------------------------------- post-filter strings


@dataclass(frozen=True)
class PostFilter:
    """A ConvolutionKernel string read into (filter, parameters, unit).

    Attributes
    ----------
    text : str
        As sent.
    name : str or None
        ``none``, ``gaussian``, ``butterworth``, ``hann``, ``hamming``, ``metz``, ``wiener``,
        ``shepp-logan``, ``parzen``; ``None`` when unparsed.
    parameters : tuple of float
        Numbers in order (Gaussian: FWHM; Butterworth: cut-off, order).
    unit : str or None
        Unit of the first parameter (``mm`` for a Gaussian FWHM, ``cycles/cm``, ``Nyquist``);
        ``None`` when the string does not say.
    fwhm_mm : float or None
        Gaussian FWHM (0 for no filter); ``None`` for other or unparsed filters.
    """

    text: str
    name: str | None
    parameters: tuple[float, ...] = ()
    unit: str | None = None
    fwhm_mm: float | None = None

    @property
    def parsed(self) -> bool:
        return self.name is not None

    def describe(self) -> str:
        """``gaussian 8 mm``, ``butterworth 0.48 10 (unit not stated)`` or ``unparsed 'x'``."""
        if self.name is None:
            return f"unparsed {self.text!r}"
        if self.name == "none":
            return "no filter"
        nums = " ".join(f"{p:g}" for p in self.parameters)
        unit = f" {self.unit}" if self.unit else (" (unit not stated)" if self.parameters else "")
        return f"{self.name} {nums}{unit}".replace("  ", " ")


_FILTER_NAMES = (
    (r"GAUSS(?:IAN)?", "gaussian"),
    (r"BUTTER(?:WORTH)?|BTW", "butterworth"),
    (r"HANN(?:ING)?", "hann"),
    (r"HAMMING", "hamming"),
    (r"METZ", "metz"),
    (r"WIENER", "wiener"),
    (r"SHEPP(?:[ -]?LOGAN)?", "shepp-logan"),
    (r"PARZEN", "parzen"),
)
_NONE_RE = re.compile(r"^(NONE|NO ?FILTER|OFF|ALL ?PASS|RAMP ONLY)$")
_NUM_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(MM|CM|CYCLES?/CM|CY/CM|1/CM|NYQ(?:UIST)?)?")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def parse_post_filter(text: str | None) -> PostFilter | None:
    """Read a ConvolutionKernel string; ``None`` when the attribute is absent.

    ``NONE`` -> no filter (FWHM 0); ``GAUSSIAN 5.0MM``, ``Gaussian 8 mm``, ``XYZ Gauss 0.0``
    -> Gaussian FWHM in mm (a bare Gaussian number is the FWHM in mm, as in the trial's own
    and Siemens' ``XYZ Gauss`` strings; ``sigma`` is converted; ``cm`` scaled);
    ``Butterworth 0.48 10`` -> (butterworth, (0.48, 10), unit not stated); ``Hann 0.8``.
    Anything else is returned with ``name=None`` (unparsed).
    """
    raw = as_str(text)
    if raw is None:
        return None
    s = raw.upper()
    s = re.sub(r"(?<=[A-Z])(?=\d)|(?<=\d)(?=[A-Z])", " ", s)
    s = re.sub(r"[,;:=()_]", " ", s)
    s = re.sub(r"\s+", " ", s).strip()
    if _NONE_RE.match(s):
        return PostFilter(raw, "none", (), None, 0.0)
    for pattern, name in _FILTER_NAMES:
        m = re.search(rf"\b(?:{pattern})\b", s)
        if m is None:
            continue
        rest = s[m.end() :]
        found = [(float(v), u) for v, u in _NUM_UNIT_RE.findall(rest)]
        params = tuple(v for v, _ in found)
        unit = found[0][1] if found and found[0][1] else None
        if name != "gaussian":
            unit = {
                "CY/CM": "cycles/cm",
                "CYCLE/CM": "cycles/cm",
                "CYCLES/CM": "cycles/cm",
                "1/CM": "cycles/cm",
                "NYQ": "Nyquist",
                "NYQUIST": "Nyquist",
                "MM": "mm",
                "CM": "cm",
            }.get(unit or "", None)
            return PostFilter(raw, name, params, unit, None)
        if not params:
            return PostFilter(raw, name, (), None, None)
        if unit not in (None, "MM", "CM"):  # a frequency-domain parameter: no spatial FWHM
            return PostFilter(raw, name, params, unit.lower(), None)
        fwhm = params[0] * (10.0 if unit == "CM" else 1.0)
        if re.search(r"\bSIGMA\b", s):
            fwhm *= FWHM_PER_SIGMA
        return PostFilter(raw, name, params, "cm" if unit == "CM" else "mm", fwhm)
    return PostFilter(raw, None)


def normalise_name(text: str | None) -> str:
    """Upper case without spaces, hyphens, dots or underscores (``Flash 3D`` -> ``FLASH3D``)."""
    return re.sub(r"[\s\-._/]", "", text or "").upper()
