"""The suite's own runner: `-n 2 --dist loadgroup` (scripts/test.sh) keeps the tests of one group,
one Slurm cluster's, in one worker, one after the other. Under pytest 9.2 pytest-xdist 3.8 stopped
grouping without a word (it marks a group in a test's id, which pytest 9.2 keeps elsewhere): the
cluster's tests went to both workers, and the second found the cluster's ports taken."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("suite-grouping")
def test_a_grouped_test_carries_its_group_under_loadgroup(request):
    if not getattr(request.config.option, "loadgroup", False):  # set in the workers of --dist loadgroup
        pytest.skip("a check of the suite's runner: run it with -n 2 --dist loadgroup, as scripts/test.sh does")
    assert request.node.nodeid.endswith("@suite-grouping"), (
        f"{request.node.nodeid}: --dist loadgroup does not group tests under this pytest and pytest-xdist; "
        "fix: hold pytest to the range pyproject.toml's test extra names")
