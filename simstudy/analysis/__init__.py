"""From a result cube to performance measures.

``measures`` (the measure registry: formula, MCSE, needs, reference line,
report section), ``blocks`` (one design point x method at a time),
``selection`` (methods= / points=), ``ledger`` (failures and warnings),
``summary`` (:func:`~simstudy.summarize`) and ``contrasts``
(:func:`~simstudy.contrast`).
"""
