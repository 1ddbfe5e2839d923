from tests.conftest import snapshot


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_refused_partner_create_changes_nothing(app, client, operator_headers):
    before = snapshot(app)
    response = client.post("/v1/admin/partners", json={"code": "x"}, headers=operator_headers)
    assert response.status_code == 422
    assert response.get_json()["error"] == "invalid_request"
    assert snapshot(app) == before
