"""What the experiment commands tell their users: the --help text (usage, presets with their sizes),
the `--set help` / `--list-fields` table of configuration fields, `--set FIELD=VALUE` overrides, and
bad input as one `error: ...` line with exit code 2 (`UsageError`). `experiments.common` builds the
commands' parsers and runs from these."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Callable, Mapping, Sequence

from mlsh_jax.config import RESUMABLE_FIELDS, MLSHConfig
from mlsh_jax.faults import STALL_EXIT_CODE, STALL_FACTOR, STALL_FLOOR_S


class UsageError(ValueError):
    """Bad command-line input: reported as `error: ...` with exit code 2."""


def exit_with_usage_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# What each preset name means, for --help; an experiment module's own PRESET_NOTES adds or replaces
# entries. --help adds each preset's sizes, computed from its configuration.
PRESET_NOTES = {
    "auto": "sized to the devices present (16 task slots on a CPU, 256 per accelerator)",
    "cpu": "16 task slots, a long run on a 2-core CPU",
    "paper": "the paper's settings (its 10 task slots)",
    "fast": "many task slots with the paper's per-slot settings: learns in fewer updates than `paper`",
    "smoke": "seconds plus compile: tiny sizes, for tests",
}


def experiment_module(module: str):
    """The module object of experiment `module` ("experiments.x"), also while it runs as `python -m`."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(getattr(main, "__spec__", None), "name", None) == module:
        return main
    return sys.modules.get(module) or importlib.import_module(module)


def usage_parser(module: str, epilog: Callable[[], str] | None = None, trains: bool = True) -> argparse.ArgumentParser:
    """An argparse parser for `python -m module` whose --help shows the module's docstring (its usage
    text, kept as written) and then the text `epilog()` (built only when help is shown: describing a
    preset may look at the devices, which must wait until a cluster has been joined). A command that
    `trains` also takes the stall watchdog's flags (`add_watchdog_flags`)."""
    parser = _ExperimentParser(prog=f"python -m {module}", description=experiment_module(module).__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.epilog_source = epilog
    if trains:
        add_watchdog_flags(parser)
    return parser


# The stall watchdog settings given on this process's command line, as keyword arguments of
# `mlsh_jax.run.train` (`experiments.common.train_or_exit` passes them). A flag, once parsed, holds for
# every later run of the process: the steps of a command that runs other commands in-process
# (`experiments.discrete_figures`) keep the settings of the command line that started them.
WATCHDOG_SETTINGS: dict[str, object] = {}


def positive_seconds(text: str) -> float:
    """`--stall-limit`'s value: a positive number of seconds (argparse reports anything else, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r} (leave --stall-limit "
                                         "out for the automatic limit; --no-stall-watchdog turns the watchdog off)")
    return value


def add_watchdog_flags(parser: argparse.ArgumentParser) -> None:
    """--stall-limit SECONDS and --no-stall-watchdog (exclusive); `_ExperimentParser.parse_args`
    records them in `WATCHDOG_SETTINGS`."""
    group = parser.add_argument_group("stall watchdog (see docs/long_runs.md)").add_mutually_exclusive_group()
    group.add_argument("--stall-limit", type=positive_seconds, default=None, metavar="SECONDS",
                       help="end the run with exit code %d when one phase of an update (rollout and update, "
                            "checkpoint save, collective) takes longer than this; default: %d x the phase's "
                            "median time, at least %g s" % (STALL_EXIT_CODE, STALL_FACTOR, STALL_FLOOR_S))
    group.add_argument("--no-stall-watchdog", action="store_true", help="do not watch for stalled updates")


def describe_presets(descriptions: Mapping[str, str], default: str, heading: str = "presets (--preset NAME)") -> str:
    """The --help listing of presets under `heading`: each name with its description (later lines of
    a description indented below its first), the default marked."""
    width = max(map(len, descriptions))
    lines = []
    for name, text in descriptions.items():
        first, *rest = text.splitlines()
        lines.append(f"  {name:<{width}}  {'(default) ' if name == default else ''}{first}")
        lines += [f"  {'':<{width}}  {line}" for line in rest]
    return f"{heading}:\n" + "\n".join(lines)


def config_preset_descriptions(module: str, presets: Mapping[str, Callable[[], MLSHConfig]],
                               sizes: bool = True) -> dict[str, str]:
    """name -> what the preset means (PRESET_NOTES, or the module's own PRESET_NOTES) and, with
    `sizes`, its env, task slots, updates and env steps."""
    notes = {**PRESET_NOTES, **getattr(experiment_module(module), "PRESET_NOTES", {})}
    descriptions = {}
    for name, build in presets.items():
        if not sizes:
            descriptions[name] = notes.get(name, "")
            continue
        config = build()
        size = (f"{config.env}, {config.num_slots} task slots x {config.num_updates} updates = "
                f"{config.num_updates * config.env_steps_per_update:,} env steps")
        descriptions[name] = f"{notes[name]}\n{size}" if name in notes else size
    return descriptions


class _ExperimentParser(argparse.ArgumentParser):
    """An experiment's parser. With `presets` set (`base_parser`), `--set help` or `--list-fields`
    prints the fields of the chosen preset (`--preset`, else the default; with the command line's
    other --set and --seed applied) and exits 0, before anything is compiled or written; an unknown
    preset or field there exits 2. The stall watchdog's flags, when given, go to `WATCHDOG_SETTINGS`."""

    presets: Mapping[str, Callable[[], MLSHConfig]] | None = None
    epilog_source: Callable[[], str] | None = None      # the text after the options in --help

    def format_help(self) -> str:
        if self.epilog_source is not None:
            self.epilog = self.epilog_source()
        return super().format_help()

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if getattr(parsed, "no_stall_watchdog", False):
            WATCHDOG_SETTINGS["watchdog"] = False
        if getattr(parsed, "stall_limit", None) is not None:
            WATCHDOG_SETTINGS.update(watchdog=True, stall_limit_s=parsed.stall_limit)
        if self.presets is not None and (parsed.list_fields or "help" in parsed.overrides):
            name = parsed.preset or parsed.default_preset
            others = [override for override in parsed.overrides if override != "help"]
            try:
                if name not in self.presets:
                    raise UsageError(f"unknown preset {name!r}; allowed: {', '.join(self.presets)}")
                config = apply_overrides(self.presets[name](), others)
            except UsageError as error:
                exit_with_usage_error(str(error))
            if parsed.seed is not None:
                config = dataclasses.replace(config, seed=parsed.seed)
            changed = " with the other --set and --seed given" if others or parsed.seed is not None else ""
            print(describe_fields(config, f"configuration fields of preset {name}{changed}"))
            raise SystemExit(0)
        return parsed


def format_value(value) -> str:
    """A field's value as `--set FIELD=VALUE` takes it (tuples comma-separated, booleans true / false)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def config_fields(config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, type, value) of every leaf field of a configuration dataclass, nested ones
    (PPO settings, credit rule) as `master.learning_rate`."""
    rows = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            rows += config_fields(value, f"{prefix}{field.name}.")
        else:
            kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
            rows.append((prefix + field.name, kind, format_value(value)))
    return rows


def describe_fields(config, heading: str, only: Sequence[str] | None = None) -> str:
    """A table of `config_fields` (those starting with one of `only`, when given) under `heading`;
    fields that --resume may change are marked."""
    rows = [row for row in config_fields(config) if only is None or row[0].startswith(tuple(only))]
    name_width, type_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    lines = [f"{heading} (--set FIELD=VALUE; * may also change on --resume):"]
    lines += [f"  {name:<{name_width}}  {kind:<{type_width}}  {value}{'  *' if name in RESUMABLE_FIELDS else ''}"
              for name, kind, value in rows]
    return "\n".join(lines)


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
