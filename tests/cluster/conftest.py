"""The module-scoped real Ray cluster of the tests in tests/cluster (`ray start --head` with token
authentication, tests/cluster/ray_head.py). A module makes its own with the CPUs it needs:

    ray_head = ray_head_fixture(num_cpus=8)
"""

from __future__ import annotations

import pytest

from tests.cluster.ray_head import RayHead, start_ray_head, stop_ray_head


def ray_head_fixture(num_cpus: int):
    """A module fixture `ray_head`: one cluster of `num_cpus` logical CPUs for the module, stopped at
    its end (its head.log kept in a temporary directory); no Ray process may outlive the stop."""

    @pytest.fixture(scope="module")
    def ray_head(tmp_path_factory) -> RayHead:
        head = start_ray_head(num_cpus=num_cpus)
        try:
            yield head
        finally:
            survivors = stop_ray_head(head, keep_log_in=tmp_path_factory.mktemp("ray-head-log"))
            assert survivors == [], f"Ray processes outlived the cluster stop: {survivors}"

    return ray_head
