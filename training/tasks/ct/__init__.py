"""The ``ct`` task: brain-metastasis detection on head CT, decided per patient.

``task`` (the sub-command), ``data`` (slice preprocessing and patient-batch loaders),
``curriculum`` (the staged training schedule), ``metrics`` (patient-level scores and plots).
"""
