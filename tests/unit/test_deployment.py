"""docker-compose.yml stays consistent with the settings and the broker it declares.

No Docker engine runs here, so the file is checked as data: a worker setting
that does not exist, or a bootstrap no listener advertises, fails this test.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from app.worker.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services() -> None:
    assert set(compose()["services"]) == {"kafka", "topics", "worker"}


def test_every_cardstream_variable_is_a_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for service in ("topics", "worker"):
        for name in compose()["services"][service]["environment"]:
            assert name.startswith(ENV_PREFIX), name
            assert name.removeprefix(ENV_PREFIX) in fields, f"{service}: unknown setting {name}"


def test_workers_reach_an_advertised_listener() -> None:
    services = compose()["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {entry.split("://", 1)[1] for entry in advertised.split(",")}
    for service in ("topics", "worker"):
        assert services[service]["environment"]["CARDSTREAM_BOOTSTRAP"] in addresses


def test_worker_serves_outside_its_container_and_keeps_consistency_checks() -> None:
    env = compose()["services"]["worker"]["environment"]
    assert env["CARDSTREAM_WEB_HOST"] == "0.0.0.0"
    assert "CARDSTREAM_RECOVERY_CONSISTENCY_CHECK" not in env  # on by default: Apache Kafka


def test_readme_documents_every_setting_and_event_kind() -> None:
    from app.domain.events import EVENT_MODELS

    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in readme, f"README lacks {name}"
    for kind in EVENT_MODELS:
        assert f'{{"type": "{kind}"' in readme, f"README lacks an example of {kind}"
