"""Package layout that pyproject.toml cannot express: the top-level folder `experiments/` installs as the package
`gvlab_experiments` (so it never shadows a user's own `experiments/` folder), with its family subpackages found
automatically. Everything else is declared in pyproject.toml."""

from setuptools import find_packages, setup

experiment_packages = ["gvlab_experiments" + name[len("experiments"):]
                       for name in find_packages(include=["experiments", "experiments.*"])]
setup(packages=find_packages(include=["gvlab", "gvlab.*"]) + experiment_packages,
      package_dir={"gvlab_experiments": "experiments"})
