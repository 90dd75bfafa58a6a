"""Hierarchical imitation for multi-stage routing (Luo et al. 2024, notes sec. 4): tanh-Gaussian BC primitives, a
primitive sequencer with history, scripted demonstrations, DAgger relabelling, flat baselines, scan rollouts."""

from gvlab.imitation import data as data
from gvlab.imitation import evaluation as evaluation
from gvlab.imitation import expert as expert
from gvlab.imitation import policies as policies
from gvlab.imitation import rollout as rollout
from gvlab.imitation import tanh_gaussian as tanh_gaussian
