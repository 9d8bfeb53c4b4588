"""Name -> builder registries, in the style of mmengine and fairseq.

A config group option, its registry key and its ``name:`` field are the same string,
so ``model=vae`` on the command line finds ``MODELS["vae"]``. A registry with a config
group (``MODELS``) also puts each entry's ``Config`` dataclass into Hydra's ConfigStore
(fairseq's ``register_model``): the dataclass is the one home of every default.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gentrain.core.errors import ConfigError

T = TypeVar("T")


def unknown_name_message(kind: str, name: object, names: list[str]) -> str:
    """``unknown model 'vaeg' — did you mean 'vae'? available: gan, vae, vaegan``."""
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} available: {', '.join(names)}"


class Registry(Generic[T]):
    """A typed mapping from names to builders that explains unknown names."""

    def __init__(
        self, kind: str, config_group: str | None = None, package: str | None = None
    ) -> None:
        self.kind = kind
        self.config_group = config_group  # entries' ``Config`` schemas go to this group
        # Where an option's settings land in the config, ``{name}`` filled in: the group's
        # own key (None) or, for a group whose options combine, one key per option.
        self.package = package
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            if self.config_group is not None:
                package = self.package.format(name=name) if self.package else None
                store_schema(self.config_group, name, obj.Config, package=package)
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register a model of their own clean up with it)."""
        del self._entries[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        return unknown_name_message(self.kind, name, self.names())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def store_schema(
    group: str, name: str, schema: type, option: bool = True, package: str | None = None
) -> None:
    """Put the defaults of dataclass ``schema`` into Hydra's ConfigStore as
    ``schema/<group>/<name>``.

    The option file ``configs/<group>/<name>.yaml`` extends it (``defaults:
    [/schema/<group>/<name>@_here_, _self_]``) and holds only what its preset changes, so
    each default is written once, in the dataclass. With no such file (and ``option``),
    the defaults are also the option ``<group>=<name>`` itself: a new model needs no YAML
    to train; ``package`` is where that option puts them (``logger.<name>``: several
    loggers at once).
    Types and ranges are still checked by ``config.validate_config`` (with its messages).
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from gentrain.core.paths import config_dir

    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    store = ConfigStore.instance()
    store.store(group=f"schema/{group}", name=name, node=defaults)
    if option and not (config_dir() / group / f"{name}.yaml").is_file():
        store.store(group=group, name=name, node=defaults, package=package)


MODELS: Registry = Registry("model", config_group="model")
DATASETS: Registry = Registry("dataset")
OPTIMIZERS: Registry = Registry("optimizer")
# ``logger=[tensorboard,csv]``: each backend's settings under ``logger.<name>``.
LOGGERS: Registry = Registry("logger", config_group="logger", package="logger.{name}")
