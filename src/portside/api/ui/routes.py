"""The web UI's routes, all under /ui/ and all OPEN to the gate: the UI judges each visitor by
their session (visitors.py). Names are the `handler` label of the HTTP metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from portside.api.guard import Guarded, Need
from portside.api.ui import account, actions, assets, pages
from portside.api.ui.rendering import error_page, page

GET = ["GET"]
POST = ["POST"]
OPEN = Need.OPEN


@page
async def not_found(request: Request) -> Response:
    return await error_page(request, 404, "There is no such page.")


def routes() -> list[BaseRoute]:
    """The UI's routes; made when the table is, once api/routes.py registered the `repo`
    convertor."""
    return [
        Guarded("/ui/", pages.list_repositories, GET, OPEN, "ui_repositories"),
        Guarded("/ui/repositories/{name:repo}", pages.show_repository, GET, OPEN, "ui_repository"),
        Guarded("/ui/images/{name:repo}@{digest}", pages.show_image, GET, OPEN, "ui_image"),
        Guarded("/ui/usage", pages.show_usage, GET, OPEN, "ui_usage"),
        Guarded("/ui/delete", actions.confirm_delete, GET, OPEN, "ui_delete"),
        Guarded("/ui/delete", actions.delete, POST, OPEN, "ui_delete"),
        Guarded("/ui/login", account.show_login, GET, OPEN, "ui_login"),
        Guarded("/ui/login", account.log_in, POST, OPEN, "ui_login"),
        Guarded("/ui/logout", account.log_out, POST, OPEN, "ui_logout"),
        Guarded("/ui/static/{file}", assets.get_asset, GET, OPEN, "ui_static"),
        Guarded("/ui/{rest:path}", not_found, GET, OPEN, "ui_not_found"),
    ]
