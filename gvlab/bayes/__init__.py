"""Bayesian neural networks: mean-field Gaussian layers and sparse subspace variational inference.

Modules: `layers` (mean-field dense layer with local reparameterisation, its KL to a Gaussian prior), `mlp` (the
Bayesian MLP classifier as a `Method`, posterior-predictive NLL / ECE / accuracy, non-zero counts and analytic
FLOPs) and `ssvi` (SSVI of Li et al. 2024: fixed-size sparse supports in `TrainState.extra`, updated by removal
and addition inside the method's own step; dense VI and a static random mask are configurations of it).

    >>> from gvlab.bayes import layers, mlp, ssvi
"""
