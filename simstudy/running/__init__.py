"""Running a study: options, plan, run, resume, recompute, verify.

``options`` (the typed :class:`RunOptions`), ``plan`` (what a run will do),
``pilot`` (timing a few replicates), ``runner`` (:func:`~simstudy.run`),
``outcome`` (its progress events and :class:`~simstudy.RunReport`),
``target`` (rounds until a target MCSE), ``recompute`` (tasks again, from
their streams), ``debugging`` (:func:`~simstudy.replay`,
:func:`~simstudy.verify`) and ``stall`` (hung tasks).
"""
