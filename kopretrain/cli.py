"""`kopretrain <command> [hydra overrides ...]`: the one console script.

Each command is a Hydra app over `conf/<command>.yaml` whose schema is a dataclass in
`kopretrain.config` (registered with Hydra's ConfigStore). The flow of one call:

1. `_prevalidate` parses every override (a syntax error is one line saying how to quote it),
   composes the config with them (every value of every sweep, for `-m`; `hydra.*` ones too)
   and converts it to the typed dataclasses, then asks the tracking store what only it can
   tell (`kopretrain.tracking.check_tracking`), so a misspelled key or a bad value fails in
   seconds, as one line naming the key, before Hydra or Ray start anything.
2. Hydra runs the app (single run or multirun); the app converts the DictConfig to typed
   objects and calls the command's plain function, `run(cfg, run_dir) -> report dict`.
3. The report is written to `<run_dir>/report.json`; a multirun also writes a sweep-level
   `report.json` (one entry per job) into the sweep directory and files its points' MLflow runs
   under one parent run of the sweep (see `kopretrain.sweep`; `hydra/launcher=ray_jobs` runs
   each point as a Ray job, `kopretrain.launch.ray_jobs`). MLflow
   runs the command left open end FINISHED after the report is written, FAILED (KILLED on
   Ctrl-C) when it raised. Ctrl-C (SIGINT) prints `kopretrain <command>: interrupted` and exits 130;
   SIGTERM (`kill`, `ray job stop` of a sweep point) ends the runs KILLED too, prints
   `kopretrain <command>: terminated` and exits 143.
4. After Ray is shut down (so no forwarded worker log can follow it), the run directory
   (or, for a multirun, the sweep directory) is printed as the very last line of stdout.

Nothing below this module sees a DictConfig.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable

from kopretrain.errors import RunFailed, UserError
from kopretrain.paths import CONF_DIR as _CONF
from kopretrain.run_dir import last_sweep_dir, write_report

CONF_DIR = str(_CONF)

# command -> (module, function) of `run(cfg, run_dir) -> dict`. Imported lazily so that
# `kopretrain prepare` does not pay for importing torch and transformers, and vice versa.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("kopretrain.data.command", "run_prepare", "clean, dedup, tokenize and pack corpora (Ray Data)"),
    "tokenizer": ("kopretrain.tokenizer.command", "run_tokenizer", "train Korean SentencePiece, merge into a base, measure"),
    "train": ("kopretrain.train.command", "run_train", "continual pretraining on Ray Train (FSDP2 / DeepSpeed / DDP)"),
    "eval": ("kopretrain.eval.command", "run_eval", "bits per character per domain, forgetting against a base"),
    "demo": ("kopretrain.demo", "run_demo", "the whole loop on the shipped sample with a tiny model"),
    "plan": ("kopretrain.plan.command", "run_plan", "memory per GPU, time and cost of a run per strategy, before renting GPUs"),
    "report": ("kopretrain.report.command", "run_report", "a sweep's table and trade-off plot: report <sweep dir | MLflow parent run id>"),
}

# Filled by the Hydra app so that `main` can print it after Hydra returns.
_LAST_RUN_DIR: list[str] = []

USAGE = """usage: kopretrain <command> [-m] [key=value ...] [hydra.run.dir=DIR]

commands:
{commands}

Any Hydra override works: `kopretrain train mix.replay_ratio=0.2`, a sweep with
`kopretrain train -m mix.replay_ratio=0,0.05,0.2`, a recipe with `experiment=smoke`.
`kopretrain <command> --cfg job` prints the composed config. Every command writes
report.json into its run directory and prints that directory as its last line."""


def _fail(command: str, message: str) -> None:
    print(f"kopretrain {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def resolve_runner(command: str) -> Callable:
    module, fn, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), fn)


# ---------------------------------------------------------------- pre-validation
def _parse_error(text: str) -> str:
    """One line for an override Hydra's grammar cannot parse, with the quoted form to use."""
    key, sep, value = text.partition("=")
    if not sep:
        return f"cannot parse override '{text}': write key=value and quote a value with special characters, e.g. 'key=\"{text}\"'"
    if value.lstrip()[:1] in ("[", "{"):
        hint, parts = "check its brackets or quote the value", [value]
    else:  # a sweep a,b: quote each value
        hint, parts = "quote the value", value.split(",")
    quoted = ",".join('"' + part.replace('"', '\\"') + '"' for part in parts)
    return f"cannot parse override '{text}': {hint}, e.g. '{key}={quoted}'"


def check_syntax(overrides: list[str]) -> None:
    """Raise UserError (one line) for the first override Hydra's override grammar rejects."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            parser.parse_overrides([text])
        except OverrideParseException:
            raise UserError(_parse_error(text)) from None


def _expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Turn Hydra overrides with sweeps (a=1,2 b=x,y) into the override lists to validate.

    Every value of every sweep is checked (the other sweeps at their first value), which
    catches `mix.replay_ratio=0,1.5` without composing the whole cartesian product.
    Overrides of Hydra itself (`hydra.*`, `hydra/...`) are composed too (a typo in one is an
    unknown key); composing drops the `hydra` node from the result.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    check_syntax(overrides)
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed, sweeps = [], []
    for o in parsed:
        if o.is_sweep_override():
            prefix = o.input_line[: len(o.input_line) - len(o.input_line.lstrip("+~"))]
            key = o.get_key_element().lstrip("+~")
            sweeps.append([f"{prefix}{key}={v}" for v in o.sweep_string_iterator()])
        else:
            fixed.append(o.input_line)
    if not sweeps:
        return [fixed]
    firsts = [values[0] for values in sweeps]
    combos = []
    for i, values in enumerate(sweeps):
        for v in values:
            combos.append(fixed + firsts[:i] + [v] + firsts[i + 1 :])
    return combos


def _one_line(exc: BaseException) -> str:
    """The user-facing one-liner for a config composition / validation failure."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, MissingConfigException):
        text = str(exc)
        missing = text.split("Could not find '", 1)[-1].split("'", 1)[0]
        options = []
        for line in text.split("Available options", 1)[-1].splitlines()[1:]:
            if not line.startswith("\t"):
                break
            options.append(line.strip())
        group, _, choice = missing.rpartition("/")
        if group and options:
            return f"unknown option '{choice}' for '{group}' (available: {', '.join(options)})"
        return f"config not found: '{missing}'"
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, OmegaConfBaseException):
        full_key = getattr(cause, "full_key", None) or ""
        inner_key = full_key
        if isinstance(exc, OmegaConfBaseException) is False and "Could not override '" in str(exc):
            full_key = str(exc).split("Could not override '", 1)[1].split("'", 1)[0]
        elif isinstance(exc, OmegaConfBaseException) is False and str(exc).startswith("Error merging override "):
            override = str(exc).split("Error merging override ", 1)[1].split("=", 1)[0].lstrip("+~")
            if full_key and not full_key.startswith(override):  # a field inside a list of dataclasses (scale.groups)
                full_key = f"{override}[].{full_key}"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            text, key = str(exc), getattr(cause, "key", None)
            if getattr(cause, "object_type", None) is dict and key is not None and "To append to your config use " in text:
                # a map field (scale.label_selector, mix.final_weights, ...) exists; only its new entry needs '+'
                hint = text.split("To append to your config use ", 1)[1].splitlines()[0].strip()
                return f"{inner_key.rpartition('.')[0] or full_key}: '{key}' is a new entry of this map: add it with '{hint}'"
            if key is not None and inner_key and not inner_key.startswith(full_key):
                return f"unknown config key '{key}' in '{full_key}'"
            return f"unknown config key '{full_key}'"
        first = str(cause).splitlines()[0]
        return f"bad value for '{full_key}': {first}" if full_key else first
    return " ".join(str(exc).split())


def compose_typed(command: str, overrides: list[str], typed: bool = True):
    """Compose `conf/<command>.yaml` with `overrides` and return the typed config object
    (`typed=False`: the composed DictConfig, its values not validated, as `--cfg job` prints it).

    Used by the pre-validation and by tests; raises UserError with a one-line message.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from kopretrain.config import check_bool_overrides, register_configs, to_typed

    register_configs(command)
    check_bool_overrides(command, overrides)  # OmegaConf reads strategy.compile=2 or =yes as true
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None, job_name=command):
            try:
                cfg = compose(config_name=command, overrides=overrides)
            except (HydraException, OmegaConfBaseException) as exc:
                raise UserError(_one_line(exc)) from None
            return to_typed(cfg) if typed else cfg
    finally:
        GlobalHydra.instance().clear()


def _prevalidate(command: str, overrides: list[str]) -> None:
    trackings = []
    for combo in _expand_sweeps(overrides):
        tracking = getattr(compose_typed(command, combo), "tracking", None)
        if tracking is not None and tracking not in trackings:
            trackings.append(tracking)
    if any(t.enabled for t in trackings):
        from kopretrain.tracking import check_tracking

        for tracking in trackings:
            check_tracking(tracking)


# ---------------------------------------------------------------- the Hydra app
def _make_app(command: str):
    import hydra
    from omegaconf import DictConfig

    @hydra.main(config_path=CONF_DIR, config_name=command, version_base=None)
    def app(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from kopretrain.config import to_typed
        from kopretrain.paths import resolve_config_paths

        from kopretrain.tracking import end_open_runs, sigint_seen

        try:
            from kopretrain.sweep import point_tracking

            # a sweep point: its MLflow run under the sweep's parent, named and tagged by its swept values
            typed = resolve_config_paths(command, point_tracking(to_typed(cfg)))  # every path key absolute, inputs checked
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            report = resolve_runner(command)(typed, run_dir)
            write_report(run_dir / "report.json", report)
        except UserError as exc:
            end_open_runs("FAILED")
            _fail(command, str(exc))
        except (RunFailed, BrokenPipeError) as exc:  # a run failed for good (Ray Train gave up), or stdout's reader
            from kopretrain.console import stdout_gone  # exited (`kopretrain train | head -1`): one line, exit 1

            stdout_gone() if isinstance(exc, BrokenPipeError) else sys.stdout.flush()
            end_open_runs("FAILED")
            why = exc if isinstance(exc, RunFailed) else "stdout was closed (its pipe's reader exited) before the end"
            print(f"kopretrain {command}: error: {why}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        except BaseException as exc:  # the MLflow run says what happened, then the error goes on
            interrupted = isinstance(exc, KeyboardInterrupt) or sigint_seen()
            end_open_runs("KILLED" if interrupted else "FAILED")
            if interrupted:  # whatever Ray made of the Ctrl-C (Hydra would print an Exception and exit 1)
                raise KeyboardInterrupt from None
            raise
        end_open_runs("FINISHED")  # a command that returned its report succeeded
        _LAST_RUN_DIR.append(str(run_dir))

    return app


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        lines = "\n".join(f"  {c.ljust(width)}  {d}" for c, (_, _, d) in COMMANDS.items())
        print(USAGE.format(commands=lines))
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(command, f"unknown command; choose one of {', '.join(COMMANDS)}")
    if command == "report" and rest and not rest[0].startswith("-") and "=" not in rest[0]:
        from kopretrain.launch.points import hydra_quoted

        rest = [f"sweep={hydra_quoted(rest[0])}"] + rest[1:]  # `kopretrain report <sweep dir | run id>`
    multirun = any(a in ("-m", "--multirun") for a in rest)
    hydra_flags = [a for a in rest if a.startswith("-") and a not in ("-m", "--multirun")]
    overrides = [a for a in rest if not a.startswith("-")]
    if multirun and {f.split("=")[0] for f in hydra_flags} & {"--cfg", "-c", "--info", "-i"}:  # Hydra: a ValueError
        _fail(command, "-m cannot be combined with --cfg or --info (they print one job's config): drop -m")
    try:
        if hydra_flags:  # --cfg/--info/--help: let Hydra print what was asked for (flag values are no overrides)
            for combo in _expand_sweeps([o for o in overrides if "=" in o]):  # a bad key: one line, not Hydra's
                compose_typed(command, combo, typed=False)
        else:
            _prevalidate(command, overrides)
            from kopretrain.paths import check_writable  # Hydra creates hydra.run.dir before the app runs

            for o in overrides:
                if o.startswith("hydra.run.dir=") and not multirun:
                    check_writable(o.partition("=")[2].strip("'\""), "hydra.run.dir")
    except UserError as exc:
        _fail(command, str(exc))

    from kopretrain.config import register_configs

    register_configs(command)
    sys.argv = [f"kopretrain-{command}"] + rest
    _LAST_RUN_DIR.clear()
    import signal

    from kopretrain.signals import interrupt_signal, watch_sigint

    watch_sigint()  # SIGINT and SIGTERM end the command's MLflow runs KILLED
    interrupted = False
    from kopretrain.sweep import sweep_outcome

    try:
        with sweep_outcome(command, multirun):  # a sweep's parent run ends with it; failed points listed, exit 1
            _make_app(command)()
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:  # Hydra printing --help/--cfg into a pipe whose reader exited (`| head -1`): rest dropped
        from kopretrain.console import stdout_gone

        stdout_gone()
    except SystemExit as exc:  # Ray's own SIGTERM handler (set by ray.init) exits 15
        if exc.code != signal.SIGTERM or interrupt_signal() != signal.SIGTERM:
            raise
        interrupted = True
    finally:
        from kopretrain.ray_session import shutdown_ray

        shutdown_ray()
    if interrupted:  # Ctrl-C or SIGTERM: one line, the shell's status for the signal; the MLflow run ended KILLED
        sys.stdout.flush()
        term = interrupt_signal() == signal.SIGTERM
        print(f"kopretrain {command}: {'terminated' if term else 'interrupted'}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.SIGTERM if term else 130)
    sys.stdout.flush()
    sys.stderr.flush()
    from kopretrain.console import print_out  # a pipe's reader gone (`| head -1`): no traceback

    if multirun:
        sweep_dir = last_sweep_dir()
        if sweep_dir:
            print_out(sweep_dir)
    elif _LAST_RUN_DIR:
        print_out(_LAST_RUN_DIR[-1])
