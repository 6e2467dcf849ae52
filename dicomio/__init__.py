"""DICOM input and image files: read a de-identified study folder, store images.

Pure I/O, no Prefect and no physics; depends only on :mod:`rntflow.core`.

* :mod:`~rntflow.dicomio.study`: read a study folder and classify its objects
  (:func:`~rntflow.dicomio.study.load_study`, :class:`~rntflow.dicomio.study.LoadedStudy`);
* :mod:`~rntflow.dicomio.nm`: choose the NM reconstruction among a study's NM objects;
* :mod:`~rntflow.dicomio.ct`: check a CT series' slice geometry and stack it (HU) with
  SimpleITK's series reader;
* :mod:`~rntflow.dicomio.rtstruct`: the contours of an RT Structure Set, per ROI (their
  rasterisation is :func:`rntflow.dosimetry.vois.rasterise_contours`);
* :mod:`~rntflow.dicomio.seg`: masks of a DICOM Segmentation (highdicom);
* :mod:`~rntflow.dicomio.images`: write and read image files atomically (NIfTI, MetaImage);
* :mod:`~rntflow.dicomio.sop`: the SOP classes the study reader recognises;
* :mod:`~rntflow.dicomio.values`: tolerant readers of element values.

Conventions (SimpleITK's): images carry spacing/origin/direction as ``(x, y, z)`` in
patient LPS (mm); arrays from them are indexed ``(z, y, x)``.
"""
