"""An example render service instrumented with ept (not part of the package).

Renders stills and videos with simulated work and failures; every render is measured
with ``measure_render_performance`` and the HTTP API with the ASGI middleware.

    pip install -e ".[asgi]" uvicorn
    EPT_SERVICE=render-example uvicorn examples.render_service:app --port 8000
    curl -X POST localhost:8000/api/render/template_hero_001?type=video
"""

from __future__ import annotations

import asyncio
import random
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import ept
from ept.integrations.asgi import TrackingMiddleware

SIMULATED_FAILURES = (
    (0.02, MemoryError("Memory limit exceeded while compositing layer 3")),
    (0.02, TimeoutError("Render timed out after 30s")),
    (0.01, FileNotFoundError("Missing image: assets/logo.png")),
    (0.01, RuntimeError("Codec error: h264 encoder failed")),
)


async def render(template_id: str, render_type: str) -> str:
    """Pretend to render; fail now and then like a real renderer."""
    render_id = f"render_{uuid.uuid4().hex[:12]}"
    dimensions = (1920, 1080) if render_type == "video" else (1080, 1080)
    with ept.measure_render_performance(render_id, render_type, template_id, dimensions):
        await asyncio.sleep(random.uniform(0.01, 0.2 if render_type == "still" else 0.6))
        for probability, error in SIMULATED_FAILURES:
            if random.random() < probability:
                raise error
    return render_id


async def render_endpoint(request: Request) -> JSONResponse:
    render_type = request.query_params.get("type", "still")
    try:
        render_id = await render(request.path_params["template_id"], render_type)
    except Exception as error:  # already tracked as render_failed, with its reason
        return JSONResponse({"error": str(error)}, status_code=500)
    return JSONResponse({"render_id": render_id})


app = Starlette(routes=[Route("/api/render/{template_id}", render_endpoint, methods=["POST"])])
app.add_middleware(TrackingMiddleware)
