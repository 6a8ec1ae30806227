"""Declaring a study: the design, its methods and outputs, the task grid.

``study`` (the :class:`~simstudy.Study` a user writes), ``methods`` (a
method's record, the parameters a function asks for, declarations typed
again), ``factors`` and ``design`` (levels, tied factors, subset designs),
``outputs`` (what a method returns), ``grid`` (design x replicates x methods
flattened into batches), ``results`` (what a batch gives back), ``loader`` (a
study file into a Study), ``lint`` (first-day traps), ``fingerprint`` (what
makes the numbers) and ``deviations`` (changes to a registered protocol).
"""
