"""The ``tissue`` task: LGG H&E tissue regions by transfer from the GBM model.

``task`` (the sub-command), ``data`` (section tiles and classes), ``crops`` (random section
crops), ``model`` (the network and its unfreezing schedule), ``metrics`` (scores and plots).
"""
