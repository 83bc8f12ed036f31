"""Logging in and out of the web UI, with the htpasswd users of the API and its token service and
its robot accounts (`robot$NAME` and the robot's secret): the same failed-login limits, the same
audit entries (`via: ui`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from portside.api import requests
from portside.api.credentials import client_address
from portside.api.origins import note_login
from portside.api.ui import params
from portside.api.ui.forms import field, local_path, read_form
from portside.api.ui.rendering import UiError, page, redirect, render
from portside.api.ui.sessions import (
    COOKIE_PATH,
    CSRF_COOKIE,
    SESSION_COOKIE,
    clear_session_cookie,
    secure,
    set_session_cookie,
)
from portside.api.ui.visitors import Ui, Visitor, ui
from portside.auth.authenticator import LoginFailed, LoginThrottled

NO_LOGINS = "This registry has no logins to its web UI (no htpasswd file): browse as a visitor."


def _login_form(
    request: Request, visitor: Visitor, next_path: str, error: str | None, status: int = 200
) -> Response:
    context = {"title": "Log in", "next_path": next_path, "error": error}
    return render(request, visitor, "login.html", context, status)


@page
async def show_login(request: Request) -> Response:
    state = ui(request)
    if not state.logins:
        raise UiError(404, NO_LOGINS)
    visitor = await state.visitor(request)
    return _login_form(request, visitor, local_path(params.text(request, "next", 1024)), None)


@page
async def log_in(request: Request) -> Response:
    state = ui(request)
    if not state.logins:
        raise UiError(404, NO_LOGINS)
    visitor = await state.visitor(request)
    form = await read_form(request, visitor)
    username, password = field(form, "username", 256), form.get("password", "")
    next_path = local_path(form.get("next"))
    try:
        await _check_password(request, state, username, password)
    except LoginThrottled as throttled:
        response = _login_form(
            request, visitor, next_path, "Too many failed logins: try again later.", 429
        )
        response.headers["Retry-After"] = str(throttled.retry_after)
        return response
    except LoginFailed:
        return _login_form(request, visitor, next_path, "Wrong username or password.", 401)
    token, _ = await state.sessions.start(username)
    response = redirect(next_path)
    tls = secure(request, state.public)
    set_session_cookie(response, token, state.sessions.lifetime, tls)
    response.delete_cookie(CSRF_COOKIE, path=COOKIE_PATH, secure=tls, httponly=True)
    return response


async def _check_password(request: Request, state: Ui, username: str, password: str) -> None:
    """LoginFailed or LoginThrottled unless the password is username's; audited as the API's
    logins are."""
    assert state.authenticator is not None
    events = requests.registry(request).events
    address = client_address(request.scope, state.public.trust_forwarded_headers)
    try:
        await state.authenticator.login(username, password, address)
    except LoginThrottled:
        note_login(events, request, state.public, username, "login-throttled", "ui")
        raise
    except LoginFailed:
        note_login(events, request, state.public, username, "login-failed", "ui")
        raise
    note_login(events, request, state.public, username, "login", "ui")


@page
async def log_out(request: Request) -> Response:
    state = ui(request)
    visitor = await state.visitor(request)
    await read_form(request, visitor)
    await state.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = redirect("/ui/")
    clear_session_cookie(response, secure(request, state.public))
    return response
