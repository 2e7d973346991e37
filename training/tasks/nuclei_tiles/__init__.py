"""The ``nuclei-tiles`` task: a LeNet-5 NUCLEI / NO_NUCLEUS tile classifier.

``task`` (the sub-command), ``data`` (labelled tiles and the unlabelled pool), ``cycles`` (one
pseudo-label-and-train cycle), ``pseudo`` (pseudo-labelling), ``metrics`` (scores and plots).
"""
