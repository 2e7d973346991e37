"""The ``mri`` task: FLAIR abnormality segmentation of LGG MRI slices.

``task`` (the sub-command), ``split`` (patient-wise splits keeping tumour slices on both sides),
``volumes`` (per-volume scores), ``cv`` (the ``cv-mri`` cross-validation command).
"""
