"""Cluster configs (``agentmesh mesh cluster-init``) and cluster URL lists, without a server.

That the written configs form a working cluster is proven by every test in
``test_cluster.py``: its servers run exactly these files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentmesh.broker.authority import init_mesh
from agentmesh.broker.cluster import (
    ClusterConfigError,
    load_cluster,
    plan_cluster,
    render_cluster_server_config,
    write_cluster,
)
from agentmesh.cli.main import app
from agentmesh.transport.factory import make_transport
from agentmesh.transport.nats import NatsTransport
from agentmesh.transport.subjects import server_urls
from iatp.identity import AgentIdentity


def test_each_server_routes_to_every_other_and_fsyncs_always(tmp_path: Path) -> None:
    plan = plan_cluster(port=5000, cluster_port=7000)
    assert plan.urls == "nats://127.0.0.1:5000,nats://127.0.0.1:5001,nats://127.0.0.1:5002"
    written = write_cluster(tmp_path, plan)
    assert [p.name for p in written] == ["s1.conf", "s2.conf", "s3.conf"]
    s2 = written[1].read_text()
    assert 'listen: "127.0.0.1:5001"' in s2
    assert re.findall(r"nats-route://[\d.]+:(\d+)", s2) == ["7000", "7002"]  # not itself
    assert "sync_interval: always" in s2
    assert f'store_dir: "{tmp_path.resolve() / "s2" / "jetstream"}"' in s2
    assert load_cluster(tmp_path) == plan


def test_default_sync_leaves_the_setting_out_for_older_servers(tmp_path: Path) -> None:
    plan = plan_cluster(sync="default")
    assert "sync_interval" not in render_cluster_server_config(plan, plan.servers[0], tmp_path)
    plan = plan_cluster(sync="1s")
    assert "sync_interval: 1s" in render_cluster_server_config(plan, plan.servers[0], tmp_path)


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"size": 2}, "3..9 servers"),
        ({"size": 10}, "3..9 servers"),
        ({"sync": "sometimes"}, "must be 'always'"),
        ({"cluster": "a b"}, "cluster name"),
        ({"port": 6222, "cluster_port": 6222}, "distinct"),
        ({"port": 65535}, "within 1..65535"),
        ({"client_ports": [1, 2]}, "give 3 client ports"),
    ],
)
def test_plans_that_cannot_work_are_refused(arguments: dict[str, object], complaint: str) -> None:
    with pytest.raises(ClusterConfigError, match=re.escape(complaint)):
        plan_cluster(**arguments)  # type: ignore[arg-type]


def test_a_directory_holding_a_cluster_is_not_overwritten(tmp_path: Path) -> None:
    write_cluster(tmp_path, plan_cluster())
    before = (tmp_path / "s1.conf").read_text()
    with pytest.raises(ClusterConfigError, match="already holds a cluster"):
        write_cluster(tmp_path, plan_cluster(port=9000))
    assert (tmp_path / "s1.conf").read_text() == before


def test_a_missing_or_garbage_plan_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match="cluster-init"):
        load_cluster(tmp_path)
    (tmp_path / "cluster.json").write_text('{"cluster": "x"}')
    with pytest.raises(ClusterConfigError, match="not a cluster plan"):
        load_cluster(tmp_path)


def test_cluster_init_cli_writes_configs_and_prints_the_node_url(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["mesh", "cluster-init", "--dir", str(tmp_path), "--port", "14222"])
    assert done.exit_code == 0, done.output
    assert "nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224" in done.output
    assert sorted(p.name for p in tmp_path.glob("*.conf")) == ["s1.conf", "s2.conf", "s3.conf"]
    again = runner.invoke(app, ["mesh", "cluster-init", "--dir", str(tmp_path)])
    assert again.exit_code == 1
    assert "already holds a cluster" in " ".join(again.output.split())
    assert "Traceback" not in again.output
    bad = runner.invoke(
        app, ["mesh", "cluster-init", "--dir", str(tmp_path / "x"), "--servers", "2"]
    )
    assert bad.exit_code == 1
    assert "cluster_config" in bad.output
    assert not (tmp_path / "x" / "cluster.json").exists()


def test_a_cluster_url_list_names_every_server() -> None:
    assert server_urls(" nats://a:1, nats://b:2 ,nats://c:3") == [
        "nats://a:1",
        "nats://b:2",
        "nats://c:3",
    ]
    transport = make_transport("nats://a:1,tls://b:2", name="t")
    assert isinstance(transport, NatsTransport)
    with pytest.raises(ValueError, match="nats://HOST1:PORT1,nats://HOST2:PORT2"):
        make_transport("nats://a:1,http://b:2", name="t")
    with pytest.raises(ValueError, match="no server URL"):
        server_urls(" , ")


def test_a_secured_cluster_keeps_the_meshs_operator_mode_on_every_server(tmp_path: Path) -> None:
    mesh_dir = tmp_path / "mesh"
    init_mesh(mesh_dir, AgentIdentity.generate(), "pass-phrase", mesh="m")
    runner = CliRunner()
    done = runner.invoke(
        app, ["mesh", "cluster-init", "--dir", str(tmp_path / "c"), "--mesh-dir", str(mesh_dir)]
    )
    assert done.exit_code == 0, done.output
    mesh_conf = (mesh_dir / "nats-server.conf").read_text()
    operator = re.search(r"^operator: .*$", mesh_conf, re.MULTILINE)
    assert operator is not None
    for name in ("s1", "s2", "s3"):
        text = (tmp_path / "c" / f"{name}.conf").read_text()
        assert operator.group(0) in text
        assert f'server_name: "{name}"' in text
        assert f'dir: "{(tmp_path / "c" / name / "jwt").resolve()}"' in text
        assert "sync_interval: always" in text
        assert "resolver_preload" in text
        assert oct((tmp_path / "c" / f"{name}.conf").stat().st_mode & 0o777) == "0o600"
    missing = runner.invoke(
        app, ["mesh", "cluster-init", "--dir", str(tmp_path / "d"), "--mesh-dir", str(tmp_path)]
    )
    assert missing.exit_code == 2
    assert "mesh init" in missing.output
    with pytest.raises(ClusterConfigError, match="re-render"):
        write_cluster(tmp_path / "e", plan_cluster(), secured="listen: 1\n")
