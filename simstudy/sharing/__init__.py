"""Sharing a study: its ADEMP protocol and a bundle others can rerun.

``protocol`` (the registered protocol and its deviations), ``bundle`` (a
study, its store and its environment in one file) and ``checks`` (what
verifying a bundle found).
"""
