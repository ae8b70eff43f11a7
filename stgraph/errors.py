"""Errors and warnings that name a setting: the library spells it as the Python argument
(``output``), the command line as its flag (``--output``).

A message is a template whose fields are either values (keyword arguments) or setting
names: ``SettingError("{output} {path} is a file", path=p)`` reads ``output /x is a file``
in Python and ``--output /x is a file`` from ``stgraph`` (:meth:`NamesSettings.for_cli`,
which only :func:`stgraph.cli.main` calls).
"""

from __future__ import annotations

from typing import Any

__all__ = ["NamesSettings", "Setting", "SettingError", "SettingMemoryError", "SettingWarning",
           "flag"]


def flag(name: str) -> str:
    """The command-line spelling of setting ``name``: ``"split_file"`` -> ``"--split-file"``."""
    return "--" + name.replace("_", "-")


class Setting(str):
    """A value of a message template that is itself a setting's name, spelled as one
    (for names known only at run time: ``SettingError("{a} and {b}", a=Setting(key),
    b=...)``); a tuple of them is spelled as a list, ``"a, b"``."""


class _Names(dict):
    """``str.format_map`` values: a field that is not a value is a setting, spelled by
    ``spell``."""

    def __init__(self, values: dict, spell) -> None:
        super().__init__(values)
        self.spell = spell

    def __missing__(self, key: str) -> str:
        return self.spell(key)


class NamesSettings:
    """Mixin of an exception or warning whose message names settings (see the module)."""

    def __init__(self, template: str, **values: Any) -> None:
        self.template, self.values = template, values
        super().__init__(self.render(str))

    def render(self, spell) -> str:
        """The message with every setting spelled by ``spell(name)``."""
        def spelled(v):
            if isinstance(v, Setting):
                return spell(v)
            if isinstance(v, tuple) and v and all(isinstance(x, Setting) for x in v):
                return ", ".join(spell(x) for x in v)  # several settings in one field
            return v

        values = {k: spelled(v) for k, v in self.values.items()}
        return self.template.format_map(_Names(values, spell))

    def for_cli(self) -> str:
        """The message with the command line's flags (``--output``)."""
        return self.render(flag)


class SettingError(NamesSettings, ValueError):
    """A wrong setting (a :class:`ValueError`), named in its message."""


class SettingMemoryError(NamesSettings, MemoryError):
    """A run too large for the memory available (a :class:`MemoryError`); the message names
    the settings that lower it."""


class SettingWarning(NamesSettings, UserWarning):
    """A setting that works but is probably not what was meant, named in its message."""

