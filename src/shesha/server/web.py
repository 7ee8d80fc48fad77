"""The web page of `shesha serve`: projects and documents, asking with the query shown live,
traces with charts, and two traces side by side. Server-rendered (Jinja2, autoescaped),
with one static script; it works offline, and no inline script can run (see ``CSP``).

``viewer_app(path)`` serves one trace file on its own, for `shesha view PATH`.
"""

from __future__ import annotations

import hmac
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pydantic import BaseModel, Field
from pygments import highlight as pygmentize
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from shesha import __version__
from shesha.errors import NotFoundError
from shesha.rlm.steps import Step, steps_of
from shesha.rlm.trace import read_trace
from shesha.server.charts import trace_charts
from shesha.server.context import service
from shesha.server.security import COOKIE
from shesha.service import TEXT_PAGE

CHART_TITLES = {
    "tokens": "Tokens per step: root model and sub-calls",
    "cost": "Cost per step: root model and sub-calls",
    "time": "Time per step: model, code and sub-calls",
    "fanout": "Sub-calls per step",
}


@cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("shesha.server", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["highlight"] = highlight
    env.globals["version"] = __version__
    return env


def highlight(code: str) -> Markup:
    """Python, coloured by Pygments (which escapes the code)."""
    return Markup(pygmentize(code, PythonLexer(), HtmlFormatter(nowrap=True)))  # noqa: S704


@cache
def code_css() -> str:
    return str(HtmlFormatter().get_style_defs("pre.code"))  # type: ignore[no-untyped-call]


def page(request: Request, template: str, **values: Any) -> HTMLResponse:
    viewer = bool(getattr(request.app.state, "viewer", False))
    sh = getattr(getattr(request.app.state, "service", None), "sh", None)
    home = None if viewer or sh is None else str(sh.store.home)
    html = templates().get_template(template).render(root="", viewer=viewer, home=home, **values)
    return HTMLResponse(html)


def error_page(
    request: Request, status: int, kind: str, message: str, hint: str | None
) -> HTMLResponse:
    response = page(request, "error.html", kind=kind, message=message, hint=hint)
    response.status_code = status
    return response


def trace_page_values(path: Path, project: str | None, name: str) -> dict[str, Any]:
    trace = read_trace(path)
    steps = steps_of(trace.events)
    return {
        "project": project,
        "name": name,
        "header": trace.header,
        "summary": trace.summary,
        "steps": steps,
        "charts": {k: Markup(v) for k, v in trace_charts(steps).items()},  # noqa: S704  built escaped
        "chart_titles": CHART_TITLES,
    }


router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def projects_page(request: Request) -> HTMLResponse:
    return page(request, "projects.html", projects=service(request).projects())


@router.post("/new")
def new_project(request: Request, name: str = Form(...)) -> RedirectResponse:
    service(request).create_project(name)
    return RedirectResponse(f"/p/{quote(name)}", status_code=303)


@router.get("/p/{name}", response_class=HTMLResponse)
def project_page(request: Request, name: str) -> HTMLResponse:
    s = service(request)
    shown = s.project(name)
    return page(
        request,
        "project.html",
        project=shown,
        docs=shown["docs"],
        traces=s.traces(name, 50),
        model=s.model_name,
    )


@router.get("/p/{name}/doc/{doc:path}", response_class=HTMLResponse)
def document_page(request: Request, name: str, doc: str, offset: int = 0) -> HTMLResponse:
    shown = service(request).text_page(name, doc, offset)
    return page(
        request,
        "document.html",
        project=name,
        name=doc,
        text=shown["text"],
        offset=shown["offset"],
        total=shown["total_chars"],
        page=TEXT_PAGE,
        next_offset=shown["next_offset"],
    )


class AskForm(BaseModel):
    question: str = Field(min_length=1)
    model: str = ""
    max_cost_usd: str = ""
    max_iterations: str = ""
    max_wall_s: str = ""


@router.post("/p/{name}/ask")
async def ask_form(
    request: Request, name: str, form: Annotated[AskForm, Form()]
) -> RedirectResponse:
    """The ask form: start the query, then show it live. Empty fields keep the defaults."""
    given = form.model_dump(exclude={"question"})
    overrides = {k: v.strip() for k, v in given.items() if v.strip()}
    queued = await service(request).submit(name, form.question, overrides)
    return RedirectResponse(f"/q/{queued.id}", status_code=303)


@router.get("/q/{query_id}", response_class=HTMLResponse)
def query_page(request: Request, query_id: str) -> HTMLResponse:
    queued = service(request).line.get(query_id)
    if queued is None:
        raise NotFoundError(f"No query {query_id!r} on this server (it may have been forgotten).")
    return page(request, "query.html", queued=queued)


@router.get("/p/{name}/t/{trace_name}", response_class=HTMLResponse)
def trace_page(request: Request, name: str, trace_name: str) -> HTMLResponse:
    path = service(request).trace_path(name, trace_name)
    values = trace_page_values(path, name, trace_name)
    values["compare_link"] = f"/compare?a={quote(f'{name}/{trace_name}')}"
    return page(request, "trace.html", **values)


def _options(request: Request) -> list[dict[str, str]]:
    s = service(request)
    options = []
    for project in s.project_names():
        for row in s.traces(project, 30):
            name = row["name"]
            label = f"{project}: {str(row['question'] or '')[:50]} ({row['status']}, {name[:15]})"
            options.append({"value": f"{project}/{name}", "label": label})
    return options


def _side(request: Request, ref: str) -> dict[str, Any]:
    project, _, name = ref.partition("/")
    trace = read_trace(service(request).trace_path(project, name))
    model = trace.header.model if trace.header else "?"
    label = f"{model} · {name.split('-')[0]}"
    return {
        "label": label,
        "header": trace.header,
        "summary": trace.summary,
        "steps": steps_of(trace.events),
    }


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, a: str = "", b: str = "") -> HTMLResponse:
    """Two traces side by side, step by step: one question under two models, say."""
    options = _options(request)
    values: dict[str, Any] = {"options": options, "a": a, "b": b, "left": None, "right": None}
    if a and b:
        left, right = _side(request, a), _side(request, b)
        by_left: dict[int, Step] = {s.number: s for s in left["steps"]}
        by_right: dict[int, Step] = {s.number: s for s in right["steps"]}
        numbers = sorted(set(by_left) | set(by_right))
        values.update(
            left=left,
            right=right,
            rows=[(n, by_left.get(n), by_right.get(n)) for n in numbers],
        )
    return page(request, "compare.html", **values)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, wrong: bool = False) -> HTMLResponse:
    return page(request, "login.html", wrong=wrong)


@router.post("/login")
def login(request: Request, token: str = Form(...)) -> RedirectResponse:
    """Trade the token for a cookie the browser keeps (HttpOnly, SameSite=Strict)."""
    expected = getattr(request.app.state, "token", None)
    if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
        return RedirectResponse("/login?wrong=true", status_code=303)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE.decode(), token, httponly=True, samesite="strict")
    return response


@router.get("/static/code.css")
def code_styles() -> Response:
    return Response(code_css(), media_type="text/css")


def add_web(app: FastAPI, token: str | None) -> None:
    """The page's routes and static files, on the server's app."""
    app.state.token = token
    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[("shesha.server", "static")]), name="static")


def viewer_app(path: Path) -> FastAPI:
    """One trace file, shown as the server shows traces: for `shesha view PATH`."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.viewer = True

    @app.get("/", response_class=HTMLResponse)
    def view(request: Request) -> HTMLResponse:
        return page(request, "trace.html", **trace_page_values(path, None, path.name))

    app.get("/static/code.css")(code_styles)
    app.mount("/static", StaticFiles(packages=[("shesha.server", "static")]), name="static")
    return app
