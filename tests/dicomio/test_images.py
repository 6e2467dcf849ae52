"""Image files: atomic write, exact read-back, geometry description."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from rntflow.core.errors import StorageError
from rntflow.dicomio.images import image_meta_dict, read_image, write_image
from rntflow.dicomio.values import FOR_METADATA_KEY


@pytest.fixture
def ct() -> sitk.Image:
    arr = np.random.default_rng(1).normal(0.0, 300.0, (7, 9, 11)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.2, 2.9, 5.0))
    img.SetOrigin((-203.2, -180.1, -97.5))
    a = math.radians(12.0)
    img.SetDirection((math.cos(a), 0.0, math.sin(a), 0.0, 1.0, 0.0, -math.sin(a), 0.0, math.cos(a)))
    img.SetMetaData(FOR_METADATA_KEY, "1.2.3.4.5")
    return img


def test_meta_dict(ct):
    meta = image_meta_dict(ct)
    assert meta["size_xyz"] == [11, 9, 7] and meta["shape_zyx"] == [7, 9, 11]
    assert meta["spacing_mm"] == pytest.approx([3.2, 2.9, 5.0])
    assert meta["voxel_ml"] == pytest.approx(3.2 * 2.9 * 5.0 / 1000)
    assert meta["frame_of_reference_uid"] == "1.2.3.4.5" and meta["pixel_type"] == "32-bit float"
    json.dumps(meta)
    bare = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    assert "frame_of_reference_uid" not in image_meta_dict(bare)


@pytest.mark.parametrize(
    "name, geometry_atol, keeps_metadata", [("ct.nii.gz", 1e-4, False), ("ct.nii", 1e-4, False), ("ct.mha", 1e-9, True)]
)
def test_round_trip(ct, tmp_path, name, geometry_atol, keeps_metadata):
    path = write_image(ct, tmp_path / "sub" / name)
    assert path == tmp_path / "sub" / name
    back = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(ct))
    assert back.GetOrigin() == pytest.approx(ct.GetOrigin(), abs=geometry_atol)
    assert back.GetSpacing() == pytest.approx(ct.GetSpacing(), abs=geometry_atol)
    assert back.GetDirection() == pytest.approx(ct.GetDirection(), abs=1e-6)
    assert back.HasMetaDataKey(FOR_METADATA_KEY) == keeps_metadata
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [name]  # no temporary file or folder left


def test_rewrite_replaces_whole_file(ct, tmp_path):
    path = tmp_path / "ct.mha"
    write_image(ct, path)
    smaller = sitk.Image(3, 3, 3, sitk.sitkInt16)
    write_image(smaller, path, durable=False)
    assert read_image(path).GetSize() == (3, 3, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["ct.mha"]


def test_errors(ct, tmp_path):
    with pytest.raises(StorageError, match="must end in"):
        write_image(ct, tmp_path / "ct.png")
    with pytest.raises(StorageError, match="not found"):
        read_image(tmp_path / "nope.mha")
    (tmp_path / "junk.mha").write_bytes(b"not an image")
    with pytest.raises(StorageError, match="could not read"):
        read_image(tmp_path / "junk.mha")
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(StorageError, match="could not write"):
        write_image(ct, tmp_path / "file" / "ct.mha")
