"""The ``stain`` task: CycleGAN IHC -> H&E stain translation.

``task`` (the sub-command), ``data`` (unpaired tile pairs and their checks), ``gan`` (the
CycleGAN inside the trainer), ``metrics`` (image-quality numbers and the tile grid).
"""
