"""Hook specifications of the `refractor` plugin system (pluggy project name "refractor").

A plugin is a module (or any object) exposed through the entry-point group ``refractor``::

    # pyproject.toml of a third-party distribution
    [project.entry-points.refractor]
    my-plugin = "my_package.register"

and implementing one or more of these hooks with ``@hookimpl``. Implementations of hooks
that do not exist here (a typo such as ``refractor_regster``) are rejected: the plugin is
reported as broken instead of being silently ignored.

The registration module must stay light: it imports pydantic and ``refractor_core`` only.
Heavy code (torch models) is named by import path in ``ComponentSpec.target`` and imported
only when the component is built, so ``refractor --help`` and ``refractor plugins`` stay
fast and never import torch.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "refractor"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def refractor_register(register: Callable[..., None]) -> None:
    """Register components (and, for learned components, their model cards).

    Call ``register(ComponentSpec(kind=..., name=..., target="pkg.mod:Class", config=Cfg,
    version=..., summary=...))`` once per component, or pass the same fields as keywords:
    ``register(kind="ranker", name="wr2", target="pkg.mod:WR2Ranker")``.

    - ``kind`` is one of reader, encoder, classifier, generator, refiner, ranker;
    - ``name`` is kebab-case and unique within its kind across all installed
      distributions: a clash is reported as an error naming both distributions;
    - ``version`` defaults to the version of the distribution that registers it.

    A learned component may also register the model card of its weights:
    ``register(ModelCard(...))`` (``refractor_registry.cards.ModelCard``), so that
    ``refractor weights list`` shows it and the resolver finds it.

    An exception raised here marks the plugin as broken (reported by ``refractor plugins``
    and as a warning by other commands); components of other plugins keep working.
    """
