"""What a pytest-xdist worker's ``__main__`` points at (tests/conftest.py):
like pytest's own ``__main__.py`` run under another name, it does nothing
when a spawned child process (a Dask nanny's worker) imports it."""
