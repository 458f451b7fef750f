"""One configuration convention for the examples: a dataclass is the CLI.

Each script describes its settings as a dataclass; every field becomes a
command-line flag (``batch_size`` -> ``--batch-size``) whose argparse type
comes from the field's annotation:

- ``int``, ``float``, ``str``: ``--flag VALUE``;
- ``bool``: ``--flag`` / ``--no-flag`` (``argparse.BooleanOptionalAction``);
- ``list[X]``: ``--flag V [V ...]`` (or ``nargs`` from the metadata);
- ``X | None``: the flag takes an ``X``; ``None`` only comes from the default;
- ``Literal[...]`` (also inside a list): the allowed values, as choices;
- any other type: ``parse=`` in the field's metadata turns the text into it.

Field metadata (see :func:`option`) adds the help text, bounds, a group for
``--help``, or hides a switch that only the tests use; without metadata the
help comes from the comments beside or above the field. A dict of presets
(``name -> {field: value}``) adds ``--preset NAME``; its values replace the
dataclass defaults, and the flags given on the command line replace both.

    @dataclasses.dataclass
    class Config:
        epochs: int = option(30, "training epochs", at_least=1)
        learning_rate: float = 1e-3  # Adam

    cfg = parse_config(Config, {"long": {"epochs": 500}}, argv, __doc__)

A value out of its field's bounds, or any problem an ``extra_checks``
function reports, ends the program with ``parser.error`` naming the flag.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import inspect
import io
import math
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Checks = Callable[[Any], list[str]]
PRESET_DEST = "_preset"


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: Iterable[Any] | None = None,
    nargs: int | str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    group: str | None = None,
    hidden: bool = False,
    rest: bool = False,
) -> Any:
    """A dataclass field with what its command-line flag needs to know.

    ``default``: omitted, the flag is required; a list is copied per instance.
    ``choices``: the allowed values (for a list, of each element).
    ``parse``: text -> value, for types argparse cannot build itself; a
    ``ValueError`` it raises becomes the error message.
    ``at_least``/``above``/``at_most``/``below``: bounds, checked on the
    final value (each element of a list; ``None`` passes).
    ``group``: the heading of the flag in ``--help``.
    ``hidden``: accepted but not listed by ``--help`` (switches for tests).
    ``rest``: a list field that takes every argument after ``--``.
    """
    metadata = {
        "help": help,
        "choices": None if choices is None else tuple(choices),
        "nargs": nargs,
        "metavar": metavar,
        "parse": parse,
        "at_least": at_least,
        "above": above,
        "at_most": at_most,
        "below": below,
        "group": group,
        "hidden": hidden,
        "rest": rest,
    }
    if isinstance(default, list):
        # A mutable default must be a factory; each instance gets its copy.
        frozen = tuple(default)
        return dataclasses.field(
            default_factory=lambda: list(frozen), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field_name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class _FlagKind:
    """How argparse reads one field: element type, choices, list or not."""

    element: Callable[[str], Any]
    choices: tuple[Any, ...] | None
    is_list: bool
    is_bool: bool


def _flag_kind(name: str, annotation: Any, meta: Mapping[str, Any]) -> _FlagKind:
    """Read a field's annotation (and metadata) into what argparse needs."""
    optional_args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        # ``X | None``: the flag takes an X; only the default can be None.
        rest = [a for a in optional_args if a is not type(None)]
        # A union of several types needs parse= (the else branch below).
        annotation = rest[0] if len(rest) == 1 else None
    is_list = typing.get_origin(annotation) is list
    if is_list:
        (annotation,) = typing.get_args(annotation) or (str,)
    choices = meta.get("choices")
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        annotation = type(choices[0])
    if meta.get("parse") is not None:
        element = _reporting_parse(meta["parse"])
    elif annotation is bool and not is_list:
        return _FlagKind(bool, None, False, True)
    elif annotation in (int, float, str):
        element = annotation
    else:
        raise TypeError(
            f"field {name!r}: no command-line reading of {annotation!r}; "
            "give option(parse=...)"
        )
    return _FlagKind(element, choices, is_list, False)


def _reporting_parse(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` whose ValueError message argparse shows as it is."""

    def parse_text(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    parse_text.__name__ = getattr(parse, "__name__", "value")
    return parse_text


def _field_comments(cls: type) -> dict[str, str]:
    """Per field, the comments beside it or directly above it in the source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            code_lines.add(token.start[0])
    found: dict[str, str] = {}
    (class_def,) = ast.parse(source).body
    for node in getattr(class_def, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        beside = [
            comments[n]
            for n in range(node.lineno, node.end_lineno + 1)
            if n in comments
        ]
        text = " ".join(above + beside)
        if text:
            found[node.target.id] = text
    return found


def _shown(value: Any) -> str:
    """A value as one would type it on the command line."""
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value)
    return str(value)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _help_text(
    field: dataclasses.Field,
    comment: str,
    presets: Mapping[str, Mapping[str, Any]],
) -> str:
    """The field's help, its default, and what each preset sets instead."""
    text = field.metadata.get("help") or comment
    default = _default_of(field)
    notes = []
    if default is not dataclasses.MISSING and default is not None:
        shown = _shown(default)
        if shown:  # an empty list has nothing to show
            notes.append(f"default: {shown}")
    changed = [
        f"{name}: {_shown(values[field.name])}"
        for name, values in presets.items()
        if field.name in values and values[field.name] != default
    ]
    if changed:
        notes.append("preset " + ", ".join(changed))
    if notes:
        text = f"{text} ({'; '.join(notes)})" if text else "; ".join(notes)
    return text.replace("%", "%%")  # argparse %-formats help strings


def _program_name(cls: type) -> str | None:
    """``python -m package.module`` for the module that defines ``cls``."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            return None  # run as a file: argparse names the file
        module = spec.name
    return f"python -m {module}"


def build_parser(
    cls: type,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    doc: str | None = None,
    *,
    default_preset: str | None = None,
    prog: str | None = None,
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``cls``.

    Every flag defaults to "not given" (``argparse.SUPPRESS``), so that the
    parsed namespace holds exactly what the command line said; the defaults
    and presets are applied by :func:`parse_config`.
    """
    presets = dict(presets or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, values in presets.items():
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"preset {name!r} sets unknown fields {unknown}")
    if default_preset is not None and default_preset not in presets:
        raise ValueError(f"default_preset {default_preset!r} is not a preset")
    paragraphs = (doc or "").strip().split("\n\n")
    parser = argparse.ArgumentParser(
        prog=prog or _program_name(cls),
        description=" ".join(paragraphs[0].split()) or None,
    )
    if presets:
        parser.add_argument(
            "--preset",
            dest=PRESET_DEST,
            choices=sorted(presets),
            default=argparse.SUPPRESS,
            help="start from these settings; the flags given override them "
            f"(default: {default_preset or 'none'})",
        )
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    groups: dict[str, Any] = {}
    for field in fields.values():
        heading = field.metadata.get("group")
        if heading and heading not in groups:
            groups[heading] = parser.add_argument_group(heading)
        help_text = (
            argparse.SUPPRESS
            if field.metadata.get("hidden")
            else _help_text(field, comments.get(field.name, ""), presets)
        )
        kind = _flag_kind(field.name, hints[field.name], field.metadata)
        _add_flag(groups.get(heading, parser), field, kind, help_text)
    return parser


def _add_flag(target: Any, field: dataclasses.Field, kind: _FlagKind, help_text: str):
    """Add the flag of one field to a parser or an argument group."""
    meta = field.metadata
    if meta.get("rest"):
        # As argparse.REMAINDER: everything after "--" (see parse_config).
        target.add_argument(
            field.name,
            nargs=argparse.REMAINDER,
            default=argparse.SUPPRESS,
            help=help_text,
        )
        return
    arguments: dict[str, Any] = {"dest": field.name, "help": help_text}
    if _default_of(field) is dataclasses.MISSING:
        arguments["required"] = True
    else:
        arguments["default"] = argparse.SUPPRESS
    if kind.is_bool:
        arguments["action"] = argparse.BooleanOptionalAction
    else:
        arguments["type"] = kind.element
        if meta.get("metavar"):
            arguments["metavar"] = meta["metavar"]
        elif not kind.choices:  # argparse shows choices as {a,b,c}
            plain = kind.element in (int, float, str)
            arguments["metavar"] = (
                kind.element.__name__ if plain else field.name.upper()
            )
        if kind.choices:
            arguments["choices"] = kind.choices
        if kind.is_list or meta.get("nargs") is not None:
            arguments["nargs"] = meta.get("nargs") or "+"
    target.add_argument(flag_name(field.name), **arguments)


def validate_config(cfg: Any) -> list[str]:
    """Problems of a config that every example rejects, each naming its flag.

    Floats must be finite and integers (counts, sizes, seeds) >= 0, unless a
    field declares its own bounds; declared bounds hold for every value of a
    list. ``None`` (an optional value left unset) passes.
    """
    problems = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            problem = _bound_problem(field, item)
            if problem:
                problems.append(f"{flag_name(field.name)} must be {problem}")
                break
    return problems


def _bound_problem(field: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with one value of ``field`` ("in [0, 1); got 2"), if any."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    meta = field.metadata
    lower, upper = meta.get("at_least"), meta.get("at_most")
    strict_lower, strict_upper = meta.get("above"), meta.get("below")
    if isinstance(value, float) and not math.isfinite(value):
        return f"finite; got {value}"
    if all(b is None for b in (lower, upper, strict_lower, strict_upper)):
        if isinstance(value, int) and value < 0:
            return f">= 0; got {value}"
        return None
    # Written as "not (bound holds)", so that NaN fails every bound.
    ok = (
        (lower is None or value >= lower)
        and (strict_lower is None or value > strict_lower)
        and (upper is None or value <= upper)
        and (strict_upper is None or value < strict_upper)
    )
    if ok:
        return None
    low = lower if lower is not None else strict_lower
    high = upper if upper is not None else strict_upper
    if low is not None and high is not None:
        left = "[" if lower is not None else "("
        right = "]" if upper is not None else ")"
        return f"in {left}{low:g}, {high:g}{right}; got {value:g}"
    if low is not None:
        return f"{'>=' if lower is not None else '>'} {low:g}; got {value:g}"
    return f"{'<=' if upper is not None else '<'} {high:g}; got {value:g}"


def parse_config(
    cls: type,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    argv: Sequence[str] | None = None,
    doc: str | None = None,
    extra_checks: Checks | Sequence[Checks] | None = None,
    *,
    default_preset: str | None = None,
    prog: str | None = None,
) -> Any:
    """The command line ``argv`` (default ``sys.argv[1:]``) as a ``cls``.

    Values come from, in increasing priority: the dataclass defaults, the
    preset (``--preset``, else ``default_preset``), the flags given. The
    result passes :func:`validate_config` and every ``extra_checks``
    function (config -> list of problems); otherwise ``parser.error`` prints
    the problems and exits with status 2.
    """
    parser = build_parser(cls, presets, doc, default_preset=default_preset, prog=prog)
    given = vars(parser.parse_args(None if argv is None else list(argv)))
    preset = given.pop(PRESET_DEST, default_preset)
    for field in dataclasses.fields(cls):
        rest = given.get(field.name)
        if field.metadata.get("rest") and rest and rest[0] == "--":
            given[field.name] = rest[1:]
    # A copy: a list in a preset must not be shared with (and changed by)
    # the configs made from it.
    chosen = copy.deepcopy(dict((presets or {})[preset])) if preset else {}
    values = {**chosen, **given}
    cfg = cls(**values)
    if extra_checks is None:
        checks: list[Checks] = []
    elif callable(extra_checks):
        checks = [extra_checks]
    else:
        checks = list(extra_checks)
    problems = validate_config(cfg)
    for check in checks:
        problems += check(cfg)
    if problems:
        parser.error("; ".join(problems))
    return cfg
