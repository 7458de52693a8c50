"""Command-line front end shared by the experiment modules: presets, overrides, clear errors.

Every experiment accepts `--out DIR`, `--seed INT`, `--preset NAME` and `--set FIELD=VALUE`
overrides of any configuration field (dotted for PPO settings, e.g. `--set sub.learning_rate=1e-4`).
Bad input stops before any compile or file write with one message and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Callable, Mapping

from envs import ENV_REGISTRY
from mlsh_jax.config import ConfigError, MLSHConfig
from mlsh_jax.run import RunDirectoryError, check_run_dir


class UsageError(ValueError):
    """Bad command-line input: reported as `error: ...` with exit code 2."""


def exit_with_usage_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def base_parser(description: str, presets: Mapping[str, Callable[[], MLSHConfig]], default_preset: str):
    """An argparse parser with the run-contract flags every experiment takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="run directory to create (must not exist or be empty); "
                             "default runs/<experiment>_<preset>_s<seed>")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--preset", default=default_preset,
                        help=f"one of: {', '.join(presets)} (default {default_preset})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a configuration field, e.g. --set num_slots=200 "
                             "--set sub.learning_rate=1e-4 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _convert(text: str, current):
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        return tuple(int(part) for part in text.split(",") if part)
    return text


def apply_overrides(config: MLSHConfig, overrides: list[str]) -> MLSHConfig:
    """Applies `FIELD=VALUE` strings to a configuration (nested PPO fields as `master.x` / `sub.x`)."""
    for override in overrides:
        if "=" not in override:
            raise UsageError(f"--set expects FIELD=VALUE, got {override!r}")
        path, text = override.split("=", 1)
        parts = path.strip().split(".")
        owners = [config]
        for part in parts[:-1]:
            child = getattr(owners[-1], part, None)
            if not dataclasses.is_dataclass(child):
                raise UsageError(f"unknown configuration field {path!r}")
            owners.append(child)
        field_names = {f.name for f in dataclasses.fields(owners[-1])}
        if parts[-1] not in field_names:
            raise UsageError(f"unknown configuration field {path!r}; fields here: {', '.join(sorted(field_names))}")
        try:
            value = _convert(text, getattr(owners[-1], parts[-1]))
        except ValueError as error:
            raise UsageError(f"bad value for {path}: {text!r} ({error})") from None
        for owner, part in zip(reversed(owners), reversed(parts)):
            value = dataclasses.replace(owner, **{part: value})
        config = value
    return config


def resolve_config(args, presets: Mapping[str, Callable[[], MLSHConfig]]) -> MLSHConfig:
    """Preset + seed + overrides -> a validated configuration; raises UsageError or ConfigError."""
    if args.preset not in presets:
        raise UsageError(f"unknown preset {args.preset!r}; allowed: {', '.join(presets)}")
    config = dataclasses.replace(presets[args.preset](), seed=args.seed)
    config = apply_overrides(config, args.overrides)
    return config.validate(tuple(ENV_REGISTRY))


def default_out_dir(experiment: str, args) -> pathlib.Path:
    return args.out if args.out is not None else pathlib.Path("runs") / f"{experiment}_{args.preset}_s{args.seed}"


def check_out_dir(out: pathlib.Path) -> None:
    """Refuses an output directory that holds files, or one that cannot be created."""
    try:
        check_run_dir(out)
    except RunDirectoryError as error:
        raise UsageError(str(error)) from None


__all__ = ["ConfigError", "UsageError", "apply_overrides", "base_parser", "check_out_dir",
           "default_out_dir", "exit_with_usage_error", "resolve_config"]
