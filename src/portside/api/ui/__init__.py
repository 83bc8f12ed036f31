"""The web UI at /ui/: pages rendered on the server from the Jinja2 templates in templates/, with
a little plain JavaScript in static/ (search as you type, copy buttons); every page works
without it. It reads through the registry layer, as the /v2 handlers do.

    routes.py      the UI's routes, in api/routes.py's table
    visitors.py    who is visiting (a session cookie, or nobody) and what they may see and do
    sessions.py    logins kept in the metadata database; the session and CSRF cookies
    forms.py       form bodies of the changes, each checked for its CSRF token
    params.py      query parameters, a 400 page for any that is wrong
    rendering.py   templates, security headers (CSP), error pages
    pages.py       repositories, a repository, an image, usage
    account.py     login and logout
    actions.py     deleting a tag or a manifest
    assets.py      the static files

Every route is OPEN to the gate (api/guard.py): the UI judges its visitors itself, by their
session, with the same policy as the API, and shows anonymous visitors what anonymous pull
allows.
"""
