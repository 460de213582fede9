"""Steering without training: the mean-difference vector and its hooked model view (vector.py), and the layer x coefficient search that picks where and how hard to add it (search.py)."""
