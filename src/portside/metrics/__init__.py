"""Prometheus metrics: the instruments every layer records to, declared in one module per
subsystem, and their export (export.py). The bottom layer, beside config: it imports nothing of
Portside, so that any layer can record with one call where the event happens, as distribution's
storage and proxy packages record to its `metrics` package.

Why not hooks that the server hands down? A metric is process-wide state either way (it ends
in prometheus_client's registry or its multiprocess files), and hooks would thread an observer
through every constructor from create_app to each driver, and a no-op default through every
test, for nothing more than what an import gives. What makes the direct calls fit the request
path is the cost: instruments.py tallies in memory (a dict lookup, a lock, an addition), and the
exporter adds the tallies to prometheus_client in batches.

    module       records                                             who records
    http         registry_http_* (distribution's), bytes, uploads    server/middleware.py
    proxy        registry_proxy_* (distribution's), outcomes         server/middleware.py
    storage      registry_storage_action_seconds                     storage/timed.py
    database     portside_metadata_query_seconds                     metadata/engine.py
    logins       portside_login_failures_total, _throttled_total     auth/authenticator.py
    gc           portside_gc_runs_total, _freed_bytes_total, ...     registry/gc.py
    notifications  registry_notifications_* (distribution's)         server/notifications.py

To add metrics: declare them in a new module here, with distribution's names where it has
them, a `_total` suffix on counters and a multiprocess `mode` on gauges (`livesum` for what a
process holds now, `max` or `mostrecent` for a value that any process may report); import the
module in export.py, so that every scrape lists it; record where the event happens; add it to
this table and the README.
Labels take values from a small, fixed set only (never a repository name or a user).
"""
