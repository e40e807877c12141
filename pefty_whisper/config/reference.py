"""`pefty config --keys`: every key with its type, default and the docstring under its field."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any, Literal

import yaml

from pefty_whisper.config import Config


def field_docs(section: type) -> dict[str, str]:
    """Each field's attribute docstring (the string literal right under it), read from the
    source: Python keeps no such docstrings at run time."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(section)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, after in zip(body, body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[statement.target.id] = " ".join(after.value.value.split())
    return docs


def config_reference() -> str:
    """Every key with its type, default and purpose, generated from the dataclasses and their
    docstrings, so the reference cannot drift from the code."""
    lines = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        section_type = hints[section.name]
        summary = (section_type.__doc__ or "").strip().split("\n\n")[0]
        lines += textwrap.wrap(
            f"{section.name}: {' '.join(summary.split())}", 100, subsequent_indent="    "
        )
        docs = field_docs(section_type)
        field_types = typing.get_type_hints(section_type)
        for f in dataclasses.fields(section_type):
            kind, default = _type_text(field_types[f.name]), _yaml_text(f.default)
            lines.append(f"  {section.name}.{f.name}: {kind} = {default}")
            lines += textwrap.wrap(
                docs.get(f.name, ""), 96, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(choice) for choice in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return f"{' | '.join(_type_text(a) for a in inner)} or null"
    if origin is tuple:
        return "list of numbers" if typing.get_args(annotation)[0] is float else "list of strings"
    return getattr(annotation, "__name__", str(annotation))


def _yaml_text(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...")
