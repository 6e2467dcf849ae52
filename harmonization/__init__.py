"""Harmonisation: NM header parsing, phantom analysis, reconstruction checks, calibration registry.

Modules: :mod:`.headers` (NmHeader, nm_to_image); phantom analysis in :mod:`.phantom` (shared
image checks and phantom mask), :mod:`.cylinder` (uniform cylinder, Bq/mL), :mod:`.nema` (NEMA IEC
body RCs), :mod:`.rc_curve` (RC curve, reference band), :mod:`.filter` (harmonising filter) and
:mod:`.phantom_study` (a phantom study to a calibration, with its checks);
:mod:`.recon_check` (protocol compliance of a reconstruction, with the header checks in
:mod:`.protocol_checks` and :mod:`.camera_vocabulary`),
:mod:`.calibration` (registry logic), :mod:`.report` (table + figure). All pure.
"""
