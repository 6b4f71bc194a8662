"""Seed 001's topology in network namespaces: `python -m lab up | down | status` (as root,
from the repository's root). See docs/tiers.md."""
