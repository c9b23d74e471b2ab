"""The actor cluster over HTTP (platform admin only), against the real app on a real engine:
its status, draining a node, and the per-host figures /metrics serves from the background
health check."""

from __future__ import annotations

import asyncio

import ray

from tests.api.helpers import admin_headers, hospital_admin, make_catalog


async def test_only_the_platform_admin_sees_the_cluster(http):
    assert (await http.get("/v1/admin/cluster")).status_code == 401
    cat = await make_catalog(http, doctors=1)
    a = await hospital_admin(http, cat["hospital"], "cluster-a")
    refused = await http.get("/v1/admin/cluster", headers=a)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (
        await http.post("/v1/admin/cluster/drain", json={"node": "x"}, headers=a)
    ).status_code == 403

    seen = await http.get("/v1/admin/cluster", headers=admin_headers())
    assert seen.status_code == 200
    body = seen.json()
    assert [h["index"] for h in body["hosts"]] == [0, 1]
    assert all(h["live"] and "error" not in h for h in body["hosts"])
    assert {n["node_id"] for n in body["nodes"]} >= {h["node_id"] for h in body["hosts"]}


async def test_a_drain_names_a_live_node_or_is_refused_and_changes_nothing(http, app):
    store = app.app.state.services.engine.store
    node_id = ray.get_runtime_context().get_node_id()  # the head: where this pool's hosts are
    for body, status, code in (
        ({"node": "no-such-node"}, 404, "not_found"),
        ({"node": node_id[:5]}, 404, "not_found"),  # too few characters to name a node
        ({"node": node_id, "undo": 0}, 422, "invalid_request"),
        ({"node": node_id, "undo": "yes"}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"node": 7}, 422, "invalid_request"),
        ({"node": ""}, 422, "invalid_request"),
    ):
        answer = await http.post("/v1/admin/cluster/drain", json=body, headers=admin_headers())
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert answer.json()["message"]
    assert await store.draining() == set(), "nothing was drained"

    done = await http.post(
        "/v1/admin/cluster/drain", json={"node": node_id[:12]}, headers=admin_headers()
    )
    assert done.status_code == 200, done.text
    assert done.json()["node_id"] == node_id and done.json()["hosts"] == [0, 1]
    assert await store.draining() == {node_id}
    undone = await http.post(
        "/v1/admin/cluster/drain", json={"node": node_id, "undo": True}, headers=admin_headers()
    )
    assert undone.status_code == 200 and undone.json()["draining"] is False
    assert await store.draining() == set()


async def test_metrics_carry_each_host_from_the_health_check(http):
    for _ in range(50):  # the background check runs every second
        text = (await http.get("/metrics", headers=admin_headers())).text
        if 'slotengine_host_up{host="1"} 1.0' in text:
            break
        await asyncio.sleep(0.1)
    assert 'slotengine_host_up{host="0"} 1.0' in text
    assert 'slotengine_host_up{host="1"} 1.0' in text
    assert "# TYPE slotengine_host_requests_total counter" in text
    assert 'slotengine_host_lease_seconds_left{host="0"}' in text
