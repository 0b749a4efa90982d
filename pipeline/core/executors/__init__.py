"""Executors that run the per-item runner's work somewhere other than a local process pool.

The local executors (``inline``, ``local``) live in :mod:`pipeline.core.runner`; this package holds the
distributed ones, imported only when ``runner.executor`` asks for them so that the default install does
not need their dependencies:

- :mod:`pipeline.core.executors.ray`: a Ray actor pool (``runner.executor: ray``, ``pip install maskloop[ray]``).
"""
