"""gvlab's experiments, installed as the package `gvlab_experiments` (from this folder, `experiments/`).

Each module registers its experiments with `@experiment(...)`. Nothing is imported here: `gvlab.manifest` finds
the registrations in the sources, and `gvlab.registry.entry(name)` imports only the module that registers `name`.
"""
