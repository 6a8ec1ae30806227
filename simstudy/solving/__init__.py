"""Solving for the sample size or effect size at a target power.

``solvespec`` (what to solve for), ``rootfit`` (the monotone curve fit and
its root) and ``solver`` (:func:`~simstudy.solve`, rounds of runs).
"""
