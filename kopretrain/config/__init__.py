"""Typed configs: one dataclass schema per command, registered with Hydra's ConfigStore.

`conf/<command>.yaml` starts with `defaults: [<command>_schema, ...]`, so every YAML option
file and every command-line override is checked against these dataclasses. Values are
validated in each dataclass's `__post_init__`, which runs when `to_typed` converts the
composed DictConfig to objects. Nothing outside `kopretrain.cli` sees a DictConfig.
"""

from __future__ import annotations

from kopretrain.errors import ConfigError, UserError

# command -> (module, class) of its schema; the schema name in ConfigStore is "<command>_schema".
SCHEMAS = {
    "prepare": ("kopretrain.config.prepare", "PrepareConfig"),
    "tokenizer": ("kopretrain.config.tokenizer", "TokenizerCommandConfig"),
    "train": ("kopretrain.config.train", "TrainConfig"),
    "eval": ("kopretrain.config.eval", "EvalConfig"),
    "demo": ("kopretrain.config.demo", "DemoConfig"),
    "plan": ("kopretrain.config.plan", "PlanConfig"),
    "report": ("kopretrain.config.report", "ReportConfig"),
}

_registered: set[str] = set()


def schema_class(command: str) -> type:
    import importlib

    module, name = SCHEMAS[command]
    return getattr(importlib.import_module(module), name)


def register_configs(*commands: str) -> None:
    """Store the schemas of `commands` (default: all) in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for command in commands or tuple(SCHEMAS):
        if command not in _registered:
            cs.store(name=f"{command}_schema", node=schema_class(command))
            _registered.add(command)


def to_typed(cfg):
    """DictConfig -> dataclass objects (runs every `__post_init__`).

    A ConfigError raised deep inside names only its own field; this finds the dotted path
    of the node that failed, so the user sees `optim.lr: must be > 0`, not `lr: ...`.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    _reject_unknown_keys(cfg, "")
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError as exc:
        prefix = _failing_prefix(cfg, "")
        raise ConfigError(f"{prefix}{exc.key}", exc.message) from None
    except MissingMandatoryValue as exc:
        raise UserError(f"missing value for '{exc.full_key}'") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "")
        raise UserError(f"bad value for '{key}': {str(exc).splitlines()[0]}") from None


def _failing_prefix(node, path: str) -> str:
    """Dotted path (with trailing dot) of the deepest structured node whose conversion fails."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    children = node.items_ex(resolve=False) if isinstance(node, DictConfig) else enumerate(node)
    for key, _ in children:
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
            sub = f"{path}{key}." if isinstance(node, DictConfig) else f"{path[:-1]}[{key}]."
            if isinstance(child, ListConfig) or OmegaConf.get_type(child) not in (dict, None):
                try:
                    OmegaConf.to_object(child)
                except ConfigError:
                    return _failing_prefix(child, sub)
    return path


def _reject_unknown_keys(node, path: str) -> None:
    """`+typo=1` gets past Hydra's struct check; a key the schema does not have is an error."""
    import dataclasses

    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig) and not node._is_none():
        schema = OmegaConf.get_type(node)
        known = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
        for key in node.keys():
            if known is not None and key not in known:
                raise UserError(f"unknown config key '{path}{key}'")
            _reject_unknown_keys(node._get_node(key), f"{path}{key}.")
    elif isinstance(node, ListConfig) and not node._is_none():
        for i in range(len(node)):
            _reject_unknown_keys(node._get_node(i), f"{path[:-1]}[{i}].")


def check_bool_overrides(command: str, overrides: list[str]) -> None:
    """A bool field given anything but true/false (or 0/1) on the command line is one ConfigError
    naming the key: OmegaConf reads any nonzero int, and 'yes', 'on', 'y', as true, silently.

    Sweeps (`a=true,2`) are checked value by value by the CLI's pre-validation; an override the
    grammar rejects is left to Hydra's own message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - a syntax error is reported by the composition
        return
    schema = schema_class(command)
    for o in parsed:
        if o.is_sweep_override() or o.is_delete() or not _is_bool_field(schema, o.key_or_group.split(".")):
            continue
        value = o.value()
        if value is None or isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            continue
        if isinstance(value, str) and (value.lower() in ("true", "false", "0", "1") or value.startswith("${")):
            continue
        raise ConfigError(o.key_or_group, f"{o.get_value_element_as_str()} is not a boolean (true or false)")


def _is_bool_field(schema: type, path: list[str]) -> bool:
    """Whether the dotted `path` in the dataclass `schema` is a bool (or Optional[bool]) field."""
    import dataclasses
    import typing

    node: typing.Any = schema
    for i, part in enumerate(path):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return False
        try:
            hint = typing.get_type_hints(node).get(part)
        except Exception:  # noqa: BLE001 - an annotation that does not resolve: not checked here
            return False
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        node = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
        if node is None:
            return False
    return node is bool
