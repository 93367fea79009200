"""Bridges from other probabilistic-programming libraries to :class:`dgm.GenerativeModel` (:mod:`.numpyro`)."""
