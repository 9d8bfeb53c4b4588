"""Every registered model passes the conformance checks (tests/conformance.py): the list of
models is the registry's, so a new model is checked without being listed here."""

from __future__ import annotations

import pytest
from conformance import CHECKS

from gentrain.core.registry import MODELS


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_conforms(name, check):
    check(name)
