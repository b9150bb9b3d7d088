"""The Slurm side of memorymodels, in layers whose imports point one way (``tests/test_layout.py``):

    cli -> monitor -> submission -> planning, node -> records, slurm        (localcluster beside, never imported)

``launch/submit.py``, ``status.py``, ``sweep_report.py`` and ``local_cluster.py`` are the commands; each hands over to
its module in ``cli/`` (or ``localcluster/``). The library (``memorymodels``) is used only through its public
functions, and never imports this package. ``docs/architecture.md`` shows one submission end to end.
"""
