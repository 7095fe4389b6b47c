"""Phenomena, one folder each, registered with `scidl.registry` on import.

A phenomenon folder holds its task config and data (`task.py`), its models (`model.py`), its
operational definition (`definition.py`), its progress measures (`measures.py`) and its zoom views
(`zoom.py`), and its `__init__` registers them. Adding a phenomenon is one folder here, one import
line below, one notebook and their tests; the core does not change.
"""
from scidl.phenomena import addition, grokking, lottery  # noqa: F401  (importing registers them)
