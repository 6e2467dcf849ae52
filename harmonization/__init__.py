"""Harmonisation: NM header parsing, phantom analysis, reconstruction checks, calibration registry.

Modules: :mod:`.headers` (NmHeader, nm_to_image), :mod:`.phantom` (uniform cylinder, NEMA IEC
body, RC curve, harmonising filter), :mod:`.recon_check` (protocol compliance),
:mod:`.calibration` (registry logic), :mod:`.report` (table + figure). All pure.
"""
