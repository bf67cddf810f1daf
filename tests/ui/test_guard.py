"""What guards the dashboard: Host/Origin, the token (header, link, cookie), and forgetting,
which needs a form from the dashboard's own page and a confirmation step."""

from __future__ import annotations

from starlette.testclient import TestClient

from rune_mcp.config import Settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.library import Library
from ui.conftest import BASE_URL, ORIGIN, csrf_of, generic_transcript, make_client, plain


def test_other_hosts_and_origins_are_refused(client: TestClient) -> None:
    rebound = client.get("/", headers={"Host": "evil.example:8787"})
    assert rebound.status_code == 421
    assert "answers only requests addressed to this machine" in rebound.text
    foreign = client.get("/", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "another site's pages are refused" in plain(foreign)
    assert client.get("/jobs/events", headers={"Host": "evil.example"}).status_code == 421
    assert client.get("/", headers={"Host": "localhost:8787"}).status_code == 200


def test_the_token_is_required_when_set(settings: Settings) -> None:
    with make_client(settings, token="s3cret-token") as client:
        refused = client.get("/")
        assert refused.status_code == 401
        assert "This dashboard needs its token" in refused.text
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/static/style.css").status_code == 401
        ok = client.get("/jobs", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and "Jobs" in ok.text
        assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
        link = client.get("/jobs?token=s3cret-token&x=1", follow_redirects=False)
        assert link.status_code == 303 and link.headers["location"] == "/jobs?x=1"
        cookie = link.headers["set-cookie"]
        assert "rune_ui_token=s3cret-token" in cookie and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert client.get("/").status_code == 200  # the cookie now carries the token
        client.cookies.clear()
        assert client.get("/").status_code == 401


def test_host_check_comes_before_the_token(settings: Settings) -> None:
    with make_client(settings, token="s3cret-token") as client:
        response = client.get("/", headers={"Host": "evil.example",
                                            "Authorization": "Bearer s3cret-token"})
        assert response.status_code == 421


def test_forget_an_adapter_asks_first(client: TestClient, settings: Settings,
                                      adapters: list[str]) -> None:
    token = csrf_of(client.get("/").text)
    target = adapters[2]
    ask = client.post("/forget", data={"csrf": token, "adapter_id": target}, headers=ORIGIN)
    assert ask.status_code == 200
    assert "Forget?" in ask.text and f"Yes, forget adapter {target[:12]}" in ask.text
    assert target in Library.open(settings).store.ids()  # asking removes nothing
    done = client.post("/forget/confirm", headers=ORIGIN,
                       data={"csrf": csrf_of(ask.text), "adapter_id": target, "confirm": "yes"})
    assert done.status_code == 200 and f"Removed 1 adapter: {target[:12]}." in done.text
    assert target not in Library.open(settings).store.ids()
    assert target not in client.get("/").text


def test_forget_without_confirmation_removes_nothing(
    client: TestClient, settings: Settings, adapters: list[str]
) -> None:
    token = csrf_of(client.get("/").text)
    response = client.post("/forget/confirm", data={"csrf": token, "adapter_id": adapters[0]},
                           headers=ORIGIN)
    assert response.status_code == 400
    assert "forgetting needs its confirmation step" in response.text
    assert sorted(Library.open(settings).store.ids()) == sorted(adapters)


def test_forget_a_session_cancels_its_queued_jobs(
    client: TestClient, settings: Settings, adapters: list[str]
) -> None:
    queue = JobQueue(settings)
    job = queue.enqueue(text=generic_transcript(7), source="cli", session_id="sess-login")
    token = csrf_of(client.get("/").text)
    ask = client.post("/forget", data={"csrf": token, "session_id": "sess-login"}, headers=ORIGIN)
    assert "Forgetting session sess-login" in ask.text
    assert "1 queued job of this session will be cancelled" in ask.text
    done = client.post("/forget/confirm", headers=ORIGIN,
                       data={"csrf": token, "session_id": "sess-login", "confirm": "yes"})
    # the second adapter is built on the session's one: forgetting the session takes it too
    assert f"Removed 2 adapters: {adapters[0][:12]}, {adapters[1][:12]}." in done.text
    assert "Cancelled 1 queued job." in done.text
    assert queue.get(job.id).state == "failed"
    assert Library.open(settings).store.ids() == [adapters[2]]


def test_forms_from_elsewhere_are_refused(client: TestClient, settings: Settings,
                                          adapters: list[str]) -> None:
    token = csrf_of(client.get("/").text)
    form = {"csrf": token, "adapter_id": adapters[0], "confirm": "yes"}
    cases = [
        ({}, "not sent from the dashboard's own page"),  # no Origin, no Referer
        ({"Origin": "http://localhost:3000"}, "not sent from the dashboard's own page"),
        ({"Referer": "http://127.0.0.1:9999/"}, "not sent from the dashboard's own page"),
    ]
    for headers, sentence in cases:
        response = client.post("/forget/confirm", data=form, headers=headers)
        assert response.status_code == 403 and sentence in plain(response), headers
    stale = client.post("/forget/confirm", headers=ORIGIN, data={**form, "csrf": "old"})
    assert stale.status_code == 403 and "This form is stale" in stale.text
    same_page = client.post("/forget", data=form, headers={"Referer": f"{BASE_URL}/adapters/x"})
    assert same_page.status_code == 200  # a Referer from this host is enough
    assert sorted(Library.open(settings).store.ids()) == sorted(adapters)


def test_forget_unknown_adapter_is_one_sentence(client: TestClient, adapters: list[str]) -> None:
    token = csrf_of(client.get("/").text)
    response = client.post("/forget", data={"csrf": token, "adapter_id": "0123456789ab"},
                           headers=ORIGIN)
    assert response.status_code == 404 and "no adapter has the id" in response.text
    neither = client.post("/forget", data={"csrf": token}, headers=ORIGIN)
    assert neither.status_code == 400 and "choose exactly one adapter or one session" in neither.text


def test_each_process_has_its_own_form_token(settings: Settings) -> None:
    with make_client(settings) as first, make_client(settings) as second:
        assert csrf_of(first.get("/recall").text) != csrf_of(second.get("/recall").text)
