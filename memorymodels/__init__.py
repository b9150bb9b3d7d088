"""memorymodels: masked-mixer autoencoders and memory models for text compression.

The library (models, data, training, evaluation). It never imports ``launch/``, the Slurm side.
"""

__version__ = "0.1.0"
