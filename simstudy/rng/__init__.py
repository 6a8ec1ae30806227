"""Random streams: one reproducible stream per task.

``streams`` (SeedSequence spawning and jumped PCG64 / MT19937 streams) and
``mtjump`` (the precomputed MT19937 jump polynomials in ``data/``).
"""
