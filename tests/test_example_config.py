"""Tests of examples/_config.py: a dataclass, its presets and its flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from examples._config import build_parser, option, parse_config, validate_config


@dataclasses.dataclass(kw_only=True)
class Toy:
    """A toy configuration."""

    out: str = option(help="where the run goes")
    epochs: int = option(3, "training epochs", at_least=1)
    rate: float = option(0.1, "mixing weight", at_least=0, below=1)
    seed: int = 0  # the one seed
    # Comments above a field are its help too.
    batch_norm: bool = True
    lrs: list[float] = option([1e-3], "learning rates", above=0)
    modes: list[Literal["on", "off"]] = option(["on", "off"], "a switch grid")
    limit: int | None = option(None, "first N examples", at_least=1)
    backend: Literal["tensorflow", "jax"] | None = None
    scale: float | str = option(1.0, "a number or auto", parse=lambda t: t)
    stop_after: int | None = option(None, hidden=True)
    passed_on: list[str] = option([], "flags for the runs", rest=True)


PRESETS = {"long": {"epochs": 500, "lrs": [1e-2, 1e-3]}, "short": {"epochs": 1}}


def _parse(argv: list[str], **kwargs) -> Toy:
    return parse_config(Toy, PRESETS, ["--out", "o", *argv], "Toy.", **kwargs)


def _error(argv: list[str], capsys, **kwargs) -> str:
    with pytest.raises(SystemExit) as exc:
        _parse(argv, **kwargs)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_defaults_come_from_the_dataclass() -> None:
    assert _parse([]) == Toy(out="o")


def test_types_of_the_flags() -> None:
    cfg = _parse(
        [
            "--epochs", "7", "--rate", "0.5", "--no-batch-norm",
            "--lrs", "0.1", "0.2", "--modes", "off", "--limit", "4",
            "--backend", "jax", "--scale", "auto",
        ]
    )  # fmt: skip
    assert cfg.epochs == 7 and isinstance(cfg.epochs, int)
    assert cfg.rate == 0.5 and cfg.batch_norm is False
    assert cfg.lrs == [0.1, 0.2] and cfg.modes == ["off"]
    assert cfg.limit == 4 and cfg.backend == "jax" and cfg.scale == "auto"
    assert _parse(["--batch-norm"]).batch_norm is True


def test_presets_then_flags() -> None:
    long = _parse(["--preset", "long"])
    assert long.epochs == 500 and long.lrs == [1e-2, 1e-3]
    assert _parse(["--preset", "long", "--epochs", "2"]).epochs == 2
    assert _parse([], default_preset="short").epochs == 1
    # The config's list is its own: changing it leaves the preset alone.
    long.lrs.append(9.0)
    assert PRESETS["long"]["lrs"] == [1e-2, 1e-3]
    with pytest.raises(ValueError, match="unknown fields"):
        build_parser(Toy, {"bad": {"epoch": 1}})


def test_rest_takes_the_flags_after_double_dash() -> None:
    cfg = _parse(["--epochs", "2", "--", "--digits-size", "8"])
    assert cfg.epochs == 2 and cfg.passed_on == ["--digits-size", "8"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be >= 1; got 0"),
        (["--rate", "1"], "--rate must be in [0, 1); got 1"),
        (["--rate", "nan"], "--rate must be finite"),
        (["--lrs", "0.1", "-1"], "--lrs must be > 0; got -1"),
        (["--seed", "-1"], "--seed must be >= 0; got -1"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["--modes", "maybe"], "argument --modes: invalid choice: 'maybe'"),
        (["--preset", "medium"], "argument --preset: invalid choice: 'medium'"),
    ],
)
def test_an_invalid_value_names_its_flag(argv, message, capsys) -> None:
    assert message in _error(argv, capsys)


def test_required_field_and_extra_checks(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_config(Toy, None, [])
    assert "the following arguments are required: --out" in capsys.readouterr().err

    def no_jax(cfg: Toy) -> list[str]:
        return ["--backend jax is not supported here"] if cfg.backend == "jax" else []

    def short(cfg: Toy) -> list[str]:
        return [] if cfg.epochs < 10 else ["--epochs must be < 10"]

    err = _error(["--backend", "jax", "--epochs", "20"], capsys, extra_checks=no_jax)
    assert "--backend jax is not supported here" in err
    assert "--epochs must be < 10" not in err
    err = _error(
        ["--backend", "jax", "--epochs", "20"], capsys, extra_checks=[no_jax, short]
    )
    assert "--backend jax is not supported here; --epochs must be < 10" in err


def test_help_lists_defaults_presets_and_comments_not_hidden(capsys) -> None:
    parser = build_parser(Toy, PRESETS, "Toy settings.\n\nMore text.")
    text = " ".join(parser.format_help().split())
    assert "training epochs (default: 3; preset long: 500, short: 1)" in text
    assert "the one seed (default: 0)" in text
    assert "Comments above a field are its help too. (default: True)" in text
    assert "--batch-norm, --no-batch-norm" in text
    assert "--lrs float [float ...]" in text
    assert "Toy settings." in text and "More text." not in text
    assert "--stop-after" not in text
    assert _parse(["--stop-after", "2"]).stop_after == 2  # hidden, yet accepted


def test_validate_config_on_a_built_config() -> None:
    assert validate_config(Toy(out="o")) == []
    assert validate_config(Toy(out="o", epochs=0, lrs=[0.0])) == [
        "--epochs must be >= 1; got 0",
        "--lrs must be > 0; got 0",
    ]
    # None is an optional value left unset, not a violation of its bound.
    assert validate_config(Toy(out="o", limit=None)) == []


def test_a_type_without_a_reading_is_refused() -> None:
    @dataclasses.dataclass
    class Odd:
        where: Path = Path(".")

    with pytest.raises(TypeError, match="give option"):
        build_parser(Odd)
