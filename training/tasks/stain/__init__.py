"""The ``stain`` task: CycleGAN IHC -> H&E stain translation.

``task`` (the sub-command), ``data`` (unpaired tile pairs and their checks), ``gan`` (the
CycleGAN inside the trainer, its stabilisers), ``metrics`` (image-quality numbers and the tile
grid), ``ihc_nuclei`` (nuclei in IHC through the translation: what ``evaluate`` scores when
the IHC tiles have nuclei masks).
"""
