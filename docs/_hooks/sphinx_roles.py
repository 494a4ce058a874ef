"""A griffe extension for the API pages: the package's docstrings use Sphinx roles
(:func:`odeint_adjoint`, :class:`~neuralode.SolveStats`), which Markdown would show literally;
they become code spans of the object's short name."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`~?([^`]+)`")


def _short(match: re.Match) -> str:
    return f"`{match.group(1).rsplit('.', 1)[-1]}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring to Markdown code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_short, obj.docstring.value)
