"""Environments as pure JAX functions (gymnax conventions): `reset(key, params)`, `step(key, state, action, params)`.

State and environment parameters are pytrees, so episodes vmap over keys and over layouts (novel layouts are data).
"""

from gvlab.envs.routing import EnvConfig as EnvConfig
from gvlab.envs.routing import EnvState as EnvState
from gvlab.envs.routing import Layout as Layout
from gvlab.envs.routing import local_coordinates as local_coordinates
from gvlab.envs.routing import observe as observe
from gvlab.envs.routing import pre_insertion_pose as pre_insertion_pose
from gvlab.envs.routing import reset as reset
from gvlab.envs.routing import sample_layout as sample_layout
from gvlab.envs.routing import step as step
from gvlab.envs.routing import target_clip as target_clip
from gvlab.envs.routing import transition as transition
