"""The simulator's fast paths give what the direct computation gives (no trial simulated)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pydicom

from rntflow.simulation import dicom_writers as dw
from rntflow.simulation.anatomy import anatomy_grid, sample_anatomy
from rntflow.simulation.geometry import Grid
from rntflow.simulation.sessions import phantom_anatomies


def test_labels_on_a_grid_equal_labels_at_its_points():
    # per-axis shapes and per-compartment boxes (label_grid) against every point tested
    grid = anatomy_grid(spacing_mm=7.2)  # coarse: the same code path, a fraction of the points
    pts = grid.points_mm()
    anatomies = list(phantom_anatomies().values())
    anatomies += [sample_anatomy(np.random.default_rng(seed), 1 + seed % 5) for seed in range(4)]
    for anat in anatomies:
        direct = anat.label_map(pts)
        fast = anat.label_map(grid)
        assert fast.dtype == direct.dtype and fast.shape == grid.shape
        np.testing.assert_array_equal(fast, direct)
        # body (and compartments, where the anatomy has some) present: not an empty comparison
        assert len(np.unique(direct)) >= min(3, 2 + len(anat.compartments))


def test_a_compartment_outside_the_grid_is_skipped():
    anat = phantom_anatomies()["nema_iec_body"]
    far = Grid.centred((4, 4, 4), (5.0, 5.0, 5.0), (0.0, 0.0, 500.0))
    assert not anat.label_map(far).any() and not anat.label_map(far.points_mm()).any()


def test_ct_slices_written_from_one_dataset_carry_their_own_attributes(tmp_path):
    grid = Grid.centred((4, 8, 8), (5.0, 3.2, 3.2), (0.0, 0.0, 150.0))
    hu = np.arange(4 * 8 * 8, dtype=float).reshape(4, 8, 8)
    ident = dw.Identity("DOE^JOHN", "P1", "19500101", "M")
    sess = dw.Session(dw.uid("s"), dw.uid("f"), "A123456789", "desc", dt.datetime(2026, 1, 1, 9), "ST", "Inst")
    refs = dw.write_ct(tmp_path, hu, grid, ident, sess, dw.uid("ser"), "SIEMENS", "M", "S")
    files = sorted(tmp_path.glob("CT_*.dcm"))
    assert len(files) == len(refs) == 4 and len({sop for sop, _ in refs}) == 4
    for k, (path, (sop, z)) in enumerate(zip(files, refs)):
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == sop
        assert ds.InstanceNumber == k + 1
        assert float(ds.ImagePositionPatient[2]) == float(ds.SliceLocation) == z
        np.testing.assert_array_equal(ds.pixel_array, np.clip(np.rint(hu[k] + 1024.0), 0, 4095))
