"""The Slurm side of memorymodels: cluster profiles, job planning, submission, sweeps and the status dashboard.

Uses the library (``memorymodels``) only through its public functions; the library never imports this package.
"""
