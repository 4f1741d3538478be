"""In-process workers for the speaker API's tests (Flask's test client), one
of each kind, with the upload limits of speaker_helpers.api_config. A test
module loads them as a plugin (an import would trip ruff F811, and pytest
could not rewrite the module's asserts):

    pytest_plugins = ["speaker_apps"]

disabled: --encoder none, its files under the test's tmp_path.
ge2e_app: GE2E with its encoder loaded, shared by the tests of one module
    (each uses accounts of its own); ge2e: a test client of it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from speaker_helpers import api_config, ready_app
from worker.app import create_app


@pytest.fixture
def disabled(tmp_path: Path) -> Iterator[FlaskClient]:
    with create_app(api_config(tmp_path, "none")).test_client() as client:
        yield client


@pytest.fixture(scope="module")
def ge2e_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return ready_app(api_config(tmp_path_factory.mktemp("ge2e-app"), "ge2e"))


@pytest.fixture
def ge2e(ge2e_app: Flask) -> Iterator[FlaskClient]:
    with ge2e_app.test_client() as client:
        yield client
