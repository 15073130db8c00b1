"""`Hyrax`: a config plus the stages as methods, for users of the reference tool.

    h = Hyrax("my.toml")            # or Hyrax() for the defaults, or Hyrax({"train": {"epochs": 2}})
    h.set("train.epochs", 3)
    run = h.train()
    latents = h.infer()             # reads the run h.train() just made

Each method is the libhyrax stage function of the same name (the reference's verb names work too);
a stage reads the result of the stage it needs from this object's last run of it, unless `from_run=`
is given.
"""

from __future__ import annotations

import os
from copy import deepcopy

from libhyrax import stages
from libhyrax.config import dump_config, parse_override, resolve, set_key
from libhyrax.results import Result


class Hyrax:
    def __init__(self, config: dict | str | os.PathLike | None = None, overrides: list[str] | tuple = ()):
        self.config = resolve(config, overrides)
        self.results: dict[str, Result] = {}

    def set(self, key: str, value) -> Hyrax:
        """Change one key (dotted path); the config is validated again."""
        cfg = deepcopy(self.config)  # a rejected value leaves the config as it was
        set_key(cfg, key, value if not isinstance(value, str) else parse_override(f"k={value}")[1])
        self.config = resolve(cfg)
        return self

    def show_config(self) -> str:
        return dump_config(self.config)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            stage = stages.get(name)
        except KeyError:
            raise AttributeError(f"Hyrax has no stage {name!r}; stages: "
                                 f"{', '.join(s.name for s in stages.STAGES if s.makes_run)}") from None
        if not stage.makes_run:
            raise AttributeError(f"`{name}` is a command-line tool; use Hyrax.show_config()")

        def run_stage(**kwargs) -> Result:
            import libhyrax

            made = [self.results[n] for n in stage.needs if n in self.results]
            if made and "from_run" not in kwargs:
                kwargs["from_run"] = made[0].path
            result = getattr(libhyrax, stage.name)(self.config, **kwargs)
            self.results[stage.name] = result
            return result

        run_stage.__name__ = stage.name
        run_stage.__doc__ = stage.help
        return run_stage

    def __dir__(self):
        return sorted(set(super().__dir__()) | {s.name for s in stages.STAGES if s.makes_run})

    def __repr__(self) -> str:
        return f"<Hyrax model={self.config['model']['name']} results_dir={self.config['general']['results_dir']}>"
