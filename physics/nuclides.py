"""Radionuclide decay data, read from data packages (never typed in).

Half-lives come from ``radioactivedecay`` (its default dataset is ICRP-107); emission
energies, yields and beta spectra from ``icrp107-database`` (ICRP Publication 107,
Eckerman & Endo 2008, Ann. ICRP 38(3)).

``radioactivedecay`` is imported on first use, not with this module: importing it costs
~2.6 s here (it loads its whole decay dataset, pandas, sympy and ``matplotlib.pyplot`` for
its plots), which every process importing the flows paid even when it never decayed
anything (issue 19). Its answers are cached per name.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

import numpy as np
from icrp107_database.utility import icrp107_source_path

from rntflow.core.errors import DosimetryInputError

#: ICRP-107 emission groups that are electrons (beta-, Auger, internal conversion).
ELECTRON_GROUPS = ("beta-", "beta+", "auger", "IE")
#: ICRP-107 emission groups that are photons.
PHOTON_GROUPS = ("gamma", "X", "annihilation")


@dataclass(frozen=True)
class Nuclide:
    """Decay data of one radionuclide.

    Attributes
    ----------
    name : str
        ICRP-107 name, e.g. ``Lu-177``.
    half_life_h : float
        Physical half-life (h).
    electron_energy_mev : float
        Mean energy emitted as electrons (beta, Auger, IC) per decay (MeV/Bq/s).
    photon_energy_mev : float
        Mean energy emitted as photons (gamma, X) per decay (MeV/Bq/s).
    photon_lines : tuple of (energy_mev, yield)
        Discrete photon emissions.
    beta_spectrum : tuple of (energy_mev, density_per_mev)
        Beta spectrum, number of betas per MeV per decay.
    """

    name: str
    half_life_h: float
    electron_energy_mev: float
    photon_energy_mev: float
    photon_lines: tuple[tuple[float, float], ...]
    beta_spectrum: tuple[tuple[float, float], ...]

    @property
    def decay_constant_per_h(self) -> float:
        """Physical decay constant (1/h)."""
        return math.log(2) / self.half_life_h

    def decay_factor(self, dt_h: float | np.ndarray) -> float | np.ndarray:
        """Fraction of activity remaining after ``dt_h`` hours."""
        return np.exp(-self.decay_constant_per_h * np.asarray(dt_h, dtype=float))


def canonical_name(name: str) -> str:
    """Normalise ``Lu177``, ``177Lu``, ``lu-177`` to the ICRP-107 form ``Lu-177``.

    Raises
    ------
    DosimetryInputError
        ``nuclide_name=...: unknown radionuclide`` for anything radioactivedecay does not
        know (including non-strings and the empty string).
    """
    if not isinstance(name, str) or not name.strip():
        raise DosimetryInputError(f"nuclide_name={name!r}: unknown radionuclide")
    try:
        return _rd_nuclide(name.strip()).nuclide
    except Exception as exc:  # radioactivedecay raises ValueError with varied text
        raise DosimetryInputError(f"nuclide_name={name!r}: unknown radionuclide") from exc


def atomic_number(name: str) -> int:
    """Atomic number Z of the radionuclide ``name`` (any common spelling).

    Raises
    ------
    DosimetryInputError
        If the name is not a known radionuclide.
    """
    return int(_rd_nuclide(canonical_name(name)).Z)


@functools.lru_cache(maxsize=256)
def _rd_nuclide(name: str):  # noqa: ANN202 - a radioactivedecay.Nuclide (imported lazily)
    """``radioactivedecay.Nuclide(name)``, importing the package on first use (module docstring)."""
    import radioactivedecay

    return radioactivedecay.Nuclide(name)


def nuclide(name: str) -> Nuclide:
    """Decay data of ``name`` (any common spelling).

    Raises
    ------
    DosimetryInputError
        If the name is not a known radionuclide or the nuclide is not in the data packages.
    """
    return _nuclide(canonical_name(name))


@functools.lru_cache(maxsize=32)
def _nuclide(canon: str) -> Nuclide:
    path = icrp107_source_path / "icrp107" / f"{canon}.json"
    if not path.exists():
        raise DosimetryInputError(f"nuclide_name={canon!r}: no ICRP-107 emission data")
    with path.open("rb") as fh:
        data = json.loads(json.load(fh))
    emis = data["emissions"]

    def mean_energy(groups: tuple[str, ...]) -> float:
        total = 0.0
        for g in groups:
            for energy, yld in emis.get(g, []):
                total += energy * yld
        return total

    lines = tuple((float(e), float(y)) for g in PHOTON_GROUPS for e, y in emis.get(g, []) if y > 0)
    spectrum = tuple((float(e), float(d)) for e, d in emis.get("b-spectra", []))
    return Nuclide(
        name=canon,
        half_life_h=float(_rd_nuclide(canon).half_life("h")),
        electron_energy_mev=mean_energy(ELECTRON_GROUPS),
        photon_energy_mev=mean_energy(PHOTON_GROUPS),
        photon_lines=lines,
        beta_spectrum=spectrum,
    )
