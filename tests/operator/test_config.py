"""The operator's configuration from the environment the chart sets, and its command line."""

from __future__ import annotations

import pytest

from ivrbot_operator import defaults as d
from ivrbot_operator.config import OperatorConfig
from ivrbot_operator.main import main


def test_from_env_reads_every_setting() -> None:
    config = OperatorConfig.from_env({
        "IVRBOT_OPERATOR_PORT_MIN": "40000", "IVRBOT_OPERATOR_PORT_MAX": "40100",
        "IVRBOT_OPERATOR_NAMESPACES": "voice, lab,", "IVRBOT_OPERATOR_RECONCILE_INTERVAL": "2.5",
        "IVRBOT_OPERATOR_OPENSIPS_MI_URL": "http://opensips-a:8888/mi, http://opensips-b:8888/mi",
        "IVRBOT_OPERATOR_LIVENESS": "", "IVRBOT_OPERATOR_BOT_IMAGE": "r/bot:2",
        "IVRBOT_OPERATOR_LEASE_NAMESPACE": "ivrbot-system", "POD_NAME": "ivrbot-operator-7d9-x2",
    })
    assert (config.pool.min, config.pool.max, config.namespaces) == (40000, 40100, ("voice", "lab"))
    assert config.reconcile_interval == 2.5
    assert config.opensips_mi_urls == ("http://opensips-a:8888/mi", "http://opensips-b:8888/mi")
    assert (config.lease_namespace, config.lease_name, config.identity) == (
        "ivrbot-system", "ivrbot-operator", "ivrbot-operator-7d9-x2")
    assert config.liveness_endpoint is None
    assert config.images.bot == "r/bot:2" and config.images.piper == d.PIPER_IMAGE


def test_empty_env_gives_the_defaults() -> None:
    config = OperatorConfig.from_env({})
    assert (config.pool.min, config.pool.max) == (d.PORT_POOL_MIN, d.PORT_POOL_MAX)
    assert config.namespaces == () and config.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert config.opensips_mi_urls == () and config.lease_namespace is None


@pytest.mark.parametrize(("env", "needle"), [
    ({"IVRBOT_OPERATOR_PORT_MIN": "many"}, "IVRBOT_OPERATOR_PORT_MIN"),
    ({"IVRBOT_OPERATOR_PORT_MIN": "30000", "IVRBOT_OPERATOR_PORT_MAX": "20000"}, "not a valid range"),
])
def test_bad_env_is_a_clear_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        OperatorConfig.from_env(env)


def test_main_help_and_bad_config_exit_cleanly(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--namespace" in capsys.readouterr().out
    monkeypatch.setenv("IVRBOT_OPERATOR_PORT_MAX", "lots")
    with pytest.raises(SystemExit) as failed:
        main([])
    assert failed.value.code == 2 and "IVRBOT_OPERATOR_PORT_MAX" in capsys.readouterr().err
