"""A new entry of a map-typed key (`scale.label_selector`, `scale.resources_per_worker`,
`mix.final_weights`) given without Hydra's '+' used to read "unknown config key
'scale.label_selector'" although the key exists: the one line now says to add the entry with '+'.
An unknown or bad field inside a list of dataclasses (`scale.groups`) names the field and the list."""

from __future__ import annotations

import pytest

from kopretrain.cli import compose_typed
from kopretrain.errors import UserError


@pytest.mark.parametrize(
    "override,expected",
    [
        ("scale.label_selector={x: y}",
         "scale.label_selector: 'x' is a new entry of this map: add it with '+scale.label_selector={x: y}'"),
        ("scale.label_selector.x=y", "scale.label_selector: 'x' is a new entry of this map: add it with '+scale.label_selector.x=y'"),
        ("scale.resources_per_worker={A100: 1}",
         "scale.resources_per_worker: 'A100' is a new entry of this map: add it with '+scale.resources_per_worker={A100: 1}'"),
        ("mix.final_weights.de=0.1", "mix.final_weights: 'de' is a new entry of this map: add it with '+mix.final_weights.de=0.1'"),
        ("scale.groups=[{name: a, bogus: 1}]", "unknown config key 'bogus' in 'scale.groups'"),
        ("scale.groups=[{name: a, num_workers: 1, label_selector: A100}]",
         "bad value for 'scale.groups[].label_selector': Cannot assign str to Dict[str, str]"),
        ("scale.groups=[{name: a, num_workers: x}]",
         "bad value for 'scale.groups[].num_workers': Value 'x' of type 'str' could not be converted to Integer"),
        ("optim.lr=abc", "bad value for 'optim.lr': Value 'abc' of type 'str' could not be converted to Float"),
        ("tracking.enabld=true", "unknown config key 'tracking.enabld'"),
        ("optim.betas=1", "unknown config key 'optim.betas'"),
    ],
)
def test_map_entry_and_unknown_key_messages(override, expected):
    with pytest.raises(UserError) as info:
        compose_typed("train", ["experiment=smoke", override])
    assert str(info.value) == expected


def test_the_suggested_override_works():
    """The README's train table gives these two forms."""
    cfg = compose_typed("train", ["experiment=smoke", "+scale.label_selector={ray.io/accelerator-type: H100}",
                                  "+scale.resources_per_worker={A100: 1}"])
    assert cfg.scale.label_selector == {"ray.io/accelerator-type": "H100"} and cfg.scale.resources_per_worker == {"A100": 1.0}
