"""Model families: each module exports a `Config` dataclass and `make(cfg, ...) -> Method`.

`gvlab.models.catalogue.CATALOGUE` holds a tiny instance of every family's method (method, toy batch, optimiser),
one line each; `tests/test_conformance.py` checks the method contract over it and that no family is missing.
"""
