"""The example project loads, migrates and answers (the floor the other Django tests stand on)."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_project_answers(client: Client) -> None:
    assert client.get("/").status_code == 200
