"""Console scripts come from the stage registry, so the stages are listed in one place only:
`hyrax` plus one `hyrax-<stage>` per stage of libhyrax/stages/__init__.py."""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

registry = runpy.run_path(str(Path(__file__).parent / "libhyrax" / "stages" / "__init__.py"))
scripts = ["hyrax = hyrax_cli.main:main"] + [
    f"hyrax-{s.name} = hyrax_cli.entry:{s.name}" for s in registry["STAGES"]
]

setup(
    packages=find_packages(include=["libhyrax", "libhyrax.*"]) + ["hyrax_cli"],
    package_dir={"hyrax_cli": "cli"},
    entry_points={"console_scripts": scripts},
)
