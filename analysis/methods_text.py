"""The facts the reports' methods sections state, taken from the code that does the work.

The methods prose (with its formulas) is in ``analysis/templates/methods_subject.html.j2``
and ``methods_trial.html.j2``; the numbers and orderings it quotes come from here, and
here from the modules that use them, so the text cannot drift from what the code does:
the dose-method preference (:data:`rntflow.core.methods.METHOD_PREFERENCE`), the
chi-square quantile of the profile-likelihood intervals
(:data:`rntflow.analysis.dose_logistic.CHI2_1_95`) and the jitter of the plotted outcomes
(:data:`rntflow.analysis.figures.JITTER`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rntflow.analysis.dose_logistic import CHI2_1_95
from rntflow.analysis.figures import JITTER
from rntflow.core.methods import METHOD_PREFERENCE

#: How the methods text names each dose method (``voi_doses.method``).
METHOD_NAMES = {
    "multi_time_point": "multi-time-point",
    "single_time_point_madsen": "single-time-point Madsen",
    "single_time_point_hanscheid": "Hänscheid",
}


def method_preference_text() -> str:
    """``'multi-time-point preferred over single-time-point Madsen over Hänscheid'``, in
    :data:`rntflow.core.methods.METHOD_PREFERENCE` order."""
    names = [METHOD_NAMES.get(m, m) for m in METHOD_PREFERENCE]
    return f"{names[0]} preferred over " + " over ".join(names[1:])


@dataclass(frozen=True)
class MethodsFacts:
    """Values quoted by the methods sections (plain text, escaped by the templates).

    Attributes
    ----------
    method_preference : str
        Which kinetics method gives a cycle's dose, best first.
    chi2_95 : str
        chi-square(1) 95 % quantile that bounds the profile-likelihood intervals (2 decimals).
    jitter : str
        Half-width of the vertical jitter of the plotted 0/1 outcomes.
    """

    method_preference: str
    chi2_95: str
    jitter: str


def methods_facts() -> MethodsFacts:
    """The :class:`MethodsFacts` of the current code."""
    return MethodsFacts(
        method_preference=method_preference_text(), chi2_95=f"{CHI2_1_95:.2f}", jitter=format(JITTER, "g")
    )
