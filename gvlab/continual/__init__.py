"""Continual learning: kernel ridge classifiers, continual-learning metrics and generative kernel continual
learning (GKCL, Derakhshani et al. 2021)."""
