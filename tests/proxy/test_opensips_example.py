"""The example OpenSIPS config (manifests/opensips.yaml) says what tests/proxy/kamailio.cfg runs.

OpenSIPS is not packaged here, so its config is checked as text: the settings a live scale-out
and the capacity fail-over depend on, and that its fail-over rules match the Kamailio config the
other tests in this folder run against real bots.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def opensips_cfg() -> str:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "opensips.yaml").read_text()) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "opensips-cfg")
    return str(cm["data"]["opensips.cfg"])


def failure_route(cfg: str) -> str:
    start = cfg.index("failure_route[NEXT_BOT]")
    return cfg[start:]


def test_db_text_does_not_cache_so_ds_reload_sees_the_new_table() -> None:
    assert re.search(r'modparam\("db_text",\s*"db_mode",\s*1\)', opensips_cfg())


def test_the_management_interface_listens_on_loopback_only() -> None:
    cfg = opensips_cfg()
    assert re.search(r'modparam\("httpd",\s*"ip",\s*"127\.0\.0\.1"\)', cfg)
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "opensips.yaml").read_text()) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    ports = [p for c in deploy["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
    service = next(d for d in docs if d["kind"] == "Service")
    # Neither a host port nor the Service offers the MI.
    assert [p["containerPort"] for p in ports] == [5060]
    assert [p["port"] for p in service["spec"]["ports"]] == [5060]


def test_only_no_answer_marks_a_bot_down_and_5xx_fails_over() -> None:
    for route in (failure_route(opensips_cfg()), failure_route((Path(__file__).with_name("kamailio.cfg")).read_text())):
        mark = route.index("ds_mark_dst")
        # the mark sits in the 408 branch, before the 5xx branch
        assert route.index('t_check_status("408")') < mark < route.index('t_check_status("5[0-9][0-9]")')
        assert route.count("ds_mark_dst") == 1
        assert "ds_next_dst()" in route and "Retry-After" in route
