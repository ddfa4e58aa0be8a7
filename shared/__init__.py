"""Code shared by the edge and the hub: config loading, logging, time and SQLite helpers.

`edge` and `hub` may import from here; they never import each other (tests/test_layering.py).
"""

__version__ = "0.1.0"
