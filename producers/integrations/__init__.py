"""One-line tracking for web frameworks and HTTP clients (optional extras).

* :mod:`producers.integrations.asgi` — ASGI middleware (Starlette, FastAPI, any ASGI app)
* :mod:`producers.integrations.wsgi` — WSGI middleware (Flask, Django, any WSGI app)
* :mod:`producers.integrations.http_clients` — httpx event hooks (sync and async) and a
  requests adapter, for calls to external APIs

The core SDK never imports these modules or their frameworks.
"""
