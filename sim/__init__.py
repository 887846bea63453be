"""ArchLab's discrete-event simulator: SimPy building blocks, metrics, real small models.

`sim` knows nothing about interview questions; `labs` composes it into experiments.
"""
