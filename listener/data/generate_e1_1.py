"""Regenerate ``ps3.15_e1_1.csv`` (PS3.15 Table E.1-1, Basic Profile actions) as data.

Source: the machine-readable transcription of DICOM PS3.15 2026c Table E.1-1 shipped by
the maintained PyPI package ``dicom-anonymizer`` 2.1.0 (Kitware, BSD-3-Clause),
module ``dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py``; its lists
are grouped by the table's "Basic Prof." action code (D, Z, X, U, Z/D, X/Z, X/D, X/Z/D,
X/Z/U*). Keywords and VRs are added from pydicom's copy of the PS3.6 data dictionary.

Usage (one-off, when the standard's edition changes)::

    pip download --no-deps dicom-anonymizer==2.1.0 -d /tmp/da && unzip /tmp/da/*.whl -d /tmp/da
    python listener/data/generate_e1_1.py \
        /tmp/da/dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py \
        listener/data/ps3.15_e1_1.csv
"""

from __future__ import annotations

import ast
import csv
import sys
from pathlib import Path

from pydicom.datadict import dictionary_description, dictionary_keyword, dictionary_VR

#: list name in the source module -> Basic Profile action code of Table E.1-1
ACTIONS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
           "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D",
           "X_Z_U_STAR_TAGS": "X/Z/U*"}


def rows(source: Path) -> list[dict[str, str]]:
    """Parse the source module's tag lists (without importing it)."""
    tree = ast.parse(source.read_text())
    out = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.List)):
            continue
        name = node.targets[0].id
        if name not in ACTIONS:
            continue
        for elt in node.value.elts:
            nums = [c.value for c in elt.elts]
            group, elem = nums[0], nums[1]
            mask = (nums[2], nums[3]) if len(nums) == 4 else (0xFFFF, 0xFFFF)
            tag = (group << 16) | elem
            try:
                kw, vr, desc = dictionary_keyword(tag), dictionary_VR(tag), \
                    dictionary_description(tag)
            except KeyError:
                kw, vr, desc = "", "", ""
            out.append({"tag": f"{group:04X}{elem:04X}", "mask": f"{mask[0]:04X}{mask[1]:04X}",
                        "keyword": kw, "vr": vr, "name": desc, "basic_action": ACTIONS[name]})
    out.sort(key=lambda r: r["tag"])
    return out


def main(argv: list[str]) -> int:
    source, dest = Path(argv[1]), Path(argv[2])
    table = rows(source)
    with dest.open("w", newline="") as fh:
        fh.write("# DICOM PS3.15 2026c Table E.1-1 (Basic Profile action per attribute);\n"
                 "# from dicom-anonymizer 2.1.0 dicomfields_2026c.py (BSD-3-Clause) by "
                 "listener/data/generate_e1_1.py\n")
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    print(f"{len(table)} attributes -> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
