"""Hook specifications of the `refractor` plugin system (pluggy project name "refractor").

A plugin is a module exposed through the entry-point group ``refractor``. It implements
one or more of these hooks with ``@hookimpl``. The registration module must stay light:
import pydantic and refractor_core only; heavy code is named by import path in
``ComponentSpec.target`` and imported when the component is built.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "refractor"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def refractor_register(register: Callable[..., None]) -> None:
    """Register components.

    Call ``register(ComponentSpec(kind=..., name=..., target="pkg.mod:Class", config=Cfg))``
    once per component. ``kind`` is one of reader, encoder, classifier, generator, refiner,
    ranker; ``name`` is kebab-case and unique within its kind across all installed
    distributions (a clash is reported as an error naming both distributions).
    """
