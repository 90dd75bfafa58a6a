"""Model families: each module exports a `Config` dataclass and `make(cfg, ...) -> Method`."""
