"""The ``nuclei`` task: HoVer-Net nuclear instance segmentation of H&E tiles.

``task`` (the sub-command), ``data`` and ``targets`` (training samples, HoVer-Net targets and
loss), ``sources`` and ``multi`` (several labelled sources at one resolution), ``native``
(scoring at the tiles' own resolution), ``type_scores`` (per-type F1 and PQ), ``compare`` (against
the classical baseline) and ``tune`` (the ``tune-nuclei`` command).
"""
