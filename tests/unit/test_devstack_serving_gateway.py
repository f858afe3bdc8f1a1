"""The Gateway stand-in's pure parts: split percentages, nginx configuration, routes, route status."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from slipway.devstack.gateway import (
    CONTROLLER_NAME,
    DEFAULT_HOST,
    MIRROR_PATH,
    Mirror,
    Settings,
    Target,
    attached_parents,
    config_version,
    render_config,
    route_mirror,
    route_split,
    route_status,
    shares,
)

A = Target("ml.churn-v1-predictor-00001", 4001)
B = Target("ml.churn-v2-predictor-00001", 4002)
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(Path("/w/gateway"), 8080)
PARENT = {"name": "slipway-gateway", "namespace": "slipway-system"}


def route(weights: dict[str, int], generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn", "namespace": "ml", "generation": generation},
        "spec": {
            "parentRefs": [PARENT],
            "hostnames": ["churn.ml.example.com"],
            "rules": [{"backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in weights.items()]}],
            **spec,
        },
    }


def test_shares_are_percentages_with_the_rest_last() -> None:
    assert shares([(A, 90), (B, 10)]) == [(A, "90.00%"), (B, "*")]
    assert shares([(A, 1), (B, 2)]) == [(A, "33.33%"), (B, "*")]
    assert shares([(A, 0), (B, 100)]) == [(B, "*")]  # weight 0: no traffic at all
    assert shares([(A, 30), (A, 30), (B, 40)]) == [(A, "60.00%"), (B, "*")]
    assert shares([(A, 0)]) == []


def test_an_empty_table_answers_404_and_its_version() -> None:
    config = render_config({}, SETTINGS)
    version = config_version(config)
    assert f'location = /.slipway/config {{ return 200 "{version}\\n"; }}' in config
    assert 'return 404 "no route for host $host\\n";' in config
    assert "listen 127.0.0.1:8080 default_server;" in config
    assert "pid /w/gateway/nginx.pid;" in config and "daemon off;" in config


def test_a_weighted_host_uses_split_clients_on_the_request_id() -> None:
    config = render_config({"churn.ml.example.com": [(A, 80), (B, 20)]}, SETTINGS)
    assert "upstream ml.churn-v1-predictor-00001 { server 127.0.0.1:4001; keepalive 8; }" in config
    assert 'split_clients "${request_id}" $slipway_split_0 {' in config
    assert "        80.00% ml.churn-v1-predictor-00001;\n        * ml.churn-v2-predictor-00001;" in config
    assert "server_name churn.ml.example.com;" in config
    assert "proxy_pass http://$slipway_split_0;" in config


def test_a_single_backend_needs_no_split_and_errors_are_statuses() -> None:
    config = render_config(
        {
            "one.ml.example.com": [(A, 0), (B, 100)],
            "down.ml.example.com": [(Target.error(503), 1)],
            "half.ml.example.com": [(A, 50), (Target.error(500), 50)],
            "none.ml.example.com": [(A, 0)],
        },
        SETTINGS,
    )
    assert "proxy_pass http://ml.churn-v2-predictor-00001;" in config
    assert "upstream ml.churn-v1-predictor-00001" in config  # still used by the half split
    assert "            return 503;" in config
    assert 'if ($slipway_split_1 = "status-500") { return 500; }' in config
    assert 'return 500 "no backend receives traffic for this route\\n";' in config


def test_unused_upstreams_are_left_out() -> None:
    config = render_config({"one.ml.example.com": [(A, 0), (B, 100)]}, SETTINGS)
    assert "ml.churn-v1-predictor-00001" not in config


def test_a_route_without_hostnames_takes_the_default_server() -> None:
    config = render_config({DEFAULT_HOST: [(A, 1)]}, SETTINGS)
    assert "no route for host" not in config
    assert config.count("proxy_pass http://ml.churn-v1-predictor-00001;") == 1


def test_the_version_changes_with_the_weights_only() -> None:
    first = render_config({"h.ml.example.com": [(A, 80), (B, 20)]}, SETTINGS)
    assert config_version(first) == config_version(render_config({"h.ml.example.com": [(B, 20), (A, 80)]}, SETTINGS))
    assert config_version(first) != config_version(render_config({"h.ml.example.com": [(A, 70), (B, 30)]}, SETTINGS))


def test_a_hostname_that_could_inject_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="hostname"):
        render_config({"evil; }": [(A, 1)]}, SETTINGS)


def test_a_mirror_copies_a_share_of_requests_and_the_answer_stays_the_primarys() -> None:
    config = render_config(
        {"churn.ml.example.com": [(A, 100), (B, 0)]},
        SETTINGS,
        {"churn.ml.example.com": Mirror([(B, 1)], 40), "other.ml.example.com": Mirror([(A, 1)], 100)},
    )
    assert "upstream ml.churn-v2-predictor-00001 { server 127.0.0.1:4002; keepalive 8; }" in config  # mirror only
    # The main location answers from the primary alone; the mirror is a subrequest whose answer is dropped.
    main = config.split("server_name churn.ml.example.com;")[1]
    assert f"mirror {MIRROR_PATH};" in main and "mirror_request_body on;" in main
    assert "proxy_pass http://ml.churn-v1-predictor-00001;" in main
    assert 'split_clients "mirror${request_id}" $slipway_mirror_0 {' in config  # not the main split's key
    assert "        60.00% status-204;\n        * ml.churn-v2-predictor-00001;" in config
    assert f"location = {MIRROR_PATH} {{" in main and "internal;" in main
    assert 'if ($slipway_mirror_0 = "status-204") { return 204; }' in main
    assert "proxy_pass http://$slipway_mirror_0$request_uri;" in main and "proxy_read_timeout 5s;" in main
    assert "other.ml.example.com" not in config  # a mirror without a route of its own is nothing
    assert config.count("mirror /") == 1


def test_a_mirror_of_everything_needs_no_skip_and_spreads_over_the_endpoints() -> None:
    assert Mirror([(A, 1), (B, 1)], 100).shares() == [(A, "50.00%"), (B, "*")]
    assert Mirror([(B, 1)], 25).shares() == [(Target.error(204), "75.00%"), (B, "*")]
    assert Mirror([(Target.error(503), 1)], 50).shares() == [(Target.error(204), "50.00%"), (Target.error(503), "*")]
    assert Mirror([(B, 1)], 0).shares() == [(Target.error(204), "*")]


def test_no_mirror_leaves_the_configuration_as_it_was() -> None:
    table = {"churn.ml.example.com": [(A, 90), (B, 10)]}
    assert render_config(table, SETTINGS, {}) == render_config(table, SETTINGS)
    assert "mirror" not in render_config(table, SETTINGS)


def test_route_mirror_reads_the_request_mirror_filter() -> None:
    obj = route({"churn-v1-predictor": 100, "churn-v2-predictor": 0})
    assert route_mirror(obj, {}) == (None, [])
    mirror: dict[str, Any] = {"backendRef": {"name": "churn-v2-predictor", "port": 80}, "percent": 30}
    obj["spec"]["rules"][0]["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    backends = {("ml", "churn-v1-predictor"): [A], ("ml", "churn-v2-predictor"): [B]}
    assert route_mirror(obj, backends) == (Mirror([(B, 1.0)], 30.0), [])
    del mirror["percent"]
    assert route_mirror(obj, backends) == (Mirror([(B, 1.0)], 100.0), [])  # neither field: everything
    mirror["fraction"] = {"numerator": 1, "denominator": 8}
    assert route_mirror(obj, backends) == (Mirror([(B, 1.0)], 12.5), [])
    assert route_mirror(obj, {("ml", "churn-v2-predictor"): []})[0] == Mirror([(Target.error(503), 1.0)], 12.5)
    mirror["backendRef"]["name"] = "churn-v9-predictor"
    found, unresolved = route_mirror(obj, backends)
    assert found is None and [r for r, _ in unresolved] == ["BackendNotFound"]
    assert "mirror backendRef churn-v9-predictor" in unresolved[0][1]


def test_the_rendered_configuration_passes_nginx_t(tmp_path: Path) -> None:
    """nginx itself accepts what we render (skipped where no nginx can be fetched)."""
    from slipway.devstack import sysdeps

    try:
        nginx = sysdeps.nginx()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"no nginx: {error}")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / kind).mkdir(parents=True)
    table = {
        "churn.ml.example.com": [(A, 80), (B, 20)],
        "churn-v1.ml.example.com": [(A, 100)],
        "broken.ml.example.com": [(A, 50), (Target.error(500), 50)],
        DEFAULT_HOST: [(Target.error(503), 1)],
    }
    mirrors = {
        "churn-v1.ml.example.com": Mirror([(B, 1)], 30),
        "churn.ml.example.com": Mirror([(A, 1), (B, 1)], 100),
        DEFAULT_HOST: Mirror([(Target.error(503), 1)], 50),
    }
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_config(table, Settings(tmp_path, 18080), mirrors))
    result = subprocess.run(
        [str(nginx), "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_a_backend_weight_is_shared_by_its_ready_endpoints() -> None:
    backends = {
        ("ml", "churn-v1-predictor"): [A],
        ("ml", "churn-v2-predictor"): [A, B],  # two ready pods behind the Service
        ("ml", "churn-v3-predictor"): [],  # a Service with no ready pod
    }
    split, unresolved = route_split(route({"churn-v1-predictor": 90, "churn-v2-predictor": 10}), backends)
    assert split == [(A, 90.0), (A, 5.0), (B, 5.0)] and unresolved == []
    split, unresolved = route_split(route({"churn-v3-predictor": 1}), backends)
    assert split == [(Target.error(503), 1.0)] and unresolved == []


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ({"name": "churn-v9-predictor"}, "BackendNotFound"),
        ({"name": "churn-v1"}, "BackendNotFound"),
        ({"name": "churn-v1-predictor", "kind": "ConfigMap"}, "InvalidKind"),
        ({"name": "churn-v1-predictor", "namespace": "other"}, "RefNotPermitted"),
    ],
)
def test_unresolvable_backends_keep_their_share_as_500(ref: dict[str, Any], reason: str) -> None:
    obj = route({"churn-v1-predictor": 50})
    obj["spec"]["rules"][0]["backendRefs"].append({**ref, "weight": 50})
    split, unresolved = route_split(obj, {("ml", "churn-v1-predictor"): [A]})
    assert split == [(A, 50.0), (Target.error(500), 50.0)]
    assert [r for r, _ in unresolved] == [reason]


def test_only_routes_attached_to_our_gateway_count() -> None:
    obj = route({})
    obj["spec"]["parentRefs"] = [PARENT, {"name": "other"}, {"name": "slipway-gateway"}]
    assert attached_parents(obj, "slipway-system", "slipway-gateway") == [PARENT]
    obj["spec"]["parentRefs"] = [{"name": "slipway-gateway"}]  # the route's own namespace
    assert attached_parents(obj, "ml", "slipway-gateway") == [{"name": "slipway-gateway"}]


def test_route_status_as_a_gateway_writes_it() -> None:
    obj = route({"churn-v1-predictor": 90}, generation=3)
    obj["status"] = {"parents": [{"controllerName": "istio.io/gateway-controller", "parentRef": {"name": "x"}}]}
    status = route_status(obj, [PARENT], [], NOW)
    other, ours = status["parents"]
    assert other["controllerName"] == "istio.io/gateway-controller"  # another controller's entry stays
    assert ours == {
        "parentRef": PARENT,
        "controllerName": CONTROLLER_NAME,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "route accepted and in effect",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-11-22T12:00:00Z",
            },
            {
                "type": "ResolvedRefs",
                "status": "True",
                "reason": "ResolvedRefs",
                "message": "all backend references resolved",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-11-22T12:00:00Z",
            },
        ],
    }
    later = datetime(2026, 11, 22, 13, 0, 0, tzinfo=UTC)
    obj["status"] = status
    obj["metadata"]["generation"] = 4
    broken = route_status(obj, [PARENT], [("BackendNotFound", "backendRef churn-v9-predictor: none")], later)
    accepted, resolved = broken["parents"][1]["conditions"]
    assert accepted["lastTransitionTime"] == "2026-11-22T12:00:00Z" and accepted["observedGeneration"] == 4
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert resolved["lastTransitionTime"] == "2026-11-22T13:00:00Z"
