"""Training and evaluation kit: datasets (RealEstate10K layout, synthetic rooms), training loops, evaluation.

Imports `cami2v_core` and `trajectories`; nothing in the node pack imports this package.
"""
