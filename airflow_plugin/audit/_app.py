"""The audit's FastAPI app, mounted on the api-server under ``/imagegate``.

- ``GET /imagegate/images`` — the Images page (Airflow's Browse menu shows it in an iframe);
- ``GET /imagegate/task?dag_id=&run_id=&task_id=&map_index=`` — one task instance's record (a tab of
  Airflow's task instance page);
- ``GET /imagegate/api/runs?image=&dag_id=&verdict=&since=&until=&limit=&cursor=`` — the same rows as JSON;
- ``GET /imagegate/api/task?…`` — one record as JSON.

Who may see what is Airflow's answer, not ours: the user comes from the api-server's own authentication
(the UI's cookie, or a bearer token from ``POST /auth/token``), and the rows are those of the DAGs the
auth manager says the user may read (``get_authorized_dag_ids``), and only when it lets the user read
XComs. The database session is the api-server's (``SessionDep``): no second database, no copy.
A record the user may not read and a record that does not exist look the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep

from airflow_plugin.audit import _html, _query

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    import imagegate

Text = Annotated[str | None, Query(max_length=600)]


def readable_dags(user: Any, session: Session) -> set[str]:
    """The DAG ids whose records *user* may read: readable DAGs, and only if the user may read XComs."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = get_auth_manager()
    # as Airflow's own XCom list across DAGs asks (GET …/dags/~/…/xcomEntries), then the readable DAGs
    if not manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.XCOM, details=DagDetails(id=None), user=user):
        return set()
    return set(manager.get_authorized_dag_ids(user=user, method="GET", session=session))


def _filter(dag_id: str | None, since: str | None, until: str | None, verdict: str | None, image: str | None) -> imagegate.AuditFilter:
    import imagegate

    return imagegate.AuditFilter.parse(dag_id=dag_id, since=since, until=until, verdict=verdict, image=image)


def _map_index(text: str | None) -> int:
    """The UI fills ``{MAP_INDEX}`` only for mapped tasks: anything that is not a number is -1."""
    try:
        return max(-1, int(text or "-1"))
    except ValueError:
        return -1


def create_app(base_path: str = "") -> FastAPI:
    import imagegate

    links = _html.Links(base_path)
    app = FastAPI(title="imagegate audit", description="What ran, which digest, why it was allowed.",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")

    @app.exception_handler(StarletteHTTPException)
    async def _unauthenticated(request: Request, exc: StarletteHTTPException) -> Any:
        """The pages send a user without a session to Airflow's login, and back here afterwards."""
        path = request.scope["path"][len(request.scope.get("root_path", "")):]
        if exc.status_code == 401 and not path.startswith("/api/"):
            from airflow.api_fastapi.app import get_auth_manager

            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(get_auth_manager().get_url_login(next_url=target), status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/images", response_class=HTMLResponse, include_in_schema=False)
    def images(user: GetUserDep, session: SessionDep, dag_id: Text = None, since: Text = None,
               until: Text = None, verdict: Text = None, image: Text = None, cursor: Text = None) -> HTMLResponse:
        readable = readable_dags(user, session)
        params = {"dag_id": dag_id or "", "since": since or "", "until": until or "", "verdict": verdict or "", "image": image or ""}
        error, page, flt = None, _query.Page([], None), imagegate.AuditFilter()
        try:
            flt = _filter(dag_id, since, until, verdict, image)
            page = _query.find_runs(session, flt, readable, cursor=cursor)
        except (imagegate.AuditQueryError, _query.CursorError) as exc:
            error = str(exc)
        body = _html.images_page(rows=page.rows, flt=flt, params=params, dags=sorted(readable), next_cursor=page.next_cursor,
                                 error=error, links=links)
        return HTMLResponse(body, status_code=400 if error else 200, headers=_html.HEADERS)

    @app.get("/task", response_class=HTMLResponse, include_in_schema=False)
    def task(user: GetUserDep, session: SessionDep, dag_id: Text = None, run_id: Text = None, task_id: Text = None,
             map_index: Text = None) -> HTMLResponse:
        found = None
        if dag_id and run_id and task_id:
            found = _query.find_one(session, (dag_id, run_id, task_id, _map_index(map_index)), readable_dags(user, session))
        if found is None:
            message = ("This task instance has no imagegate record you may read: it did not go through the gate "
                       "(not a container task, or it ran before imagegate was installed), or its DAG is not yours to read.")
            return HTMLResponse(_html.task_page(row=None, raw=None, message=message, links=links), status_code=404,
                                headers=_html.HEADERS)
        raw, row = found
        return HTMLResponse(_html.task_page(row=row, raw=raw, message="", links=links), headers=_html.HEADERS)

    @app.get("/api/runs")
    def runs(user: GetUserDep, session: SessionDep, dag_id: Text = None, since: Text = None, until: Text = None,
             verdict: Text = None, image: Text = None, cursor: Text = None,
             limit: Annotated[int, Query(ge=1, le=_query.MAX_LIMIT)] = _query.DEFAULT_LIMIT) -> JSONResponse:
        """The task instances that went through the gate, newest first (``next_cursor`` pages on)."""
        try:
            flt = _filter(dag_id, since, until, verdict, image)
            page = _query.find_runs(session, flt, readable_dags(user, session), limit=limit, cursor=cursor)
        except imagegate.AuditQueryError as exc:
            raise HTTPException(400, {"message": str(exc), "option": exc.option}) from None
        except _query.CursorError as exc:
            raise HTTPException(400, {"message": str(exc), "option": "cursor"}) from None
        return JSONResponse({"runs": [r.to_dict() for r in page.rows], "next_cursor": page.next_cursor,
                             "filter": flt.to_params()}, headers={"Cache-Control": "no-store"})

    @app.get("/api/task")
    def task_json(user: GetUserDep, session: SessionDep, dag_id: Annotated[str, Query(max_length=250)],
                  run_id: Annotated[str, Query(max_length=250)], task_id: Annotated[str, Query(max_length=250)],
                  map_index: Annotated[int, Query(ge=-1)] = -1) -> JSONResponse:
        """One task instance's row and its record as stored."""
        found = _query.find_one(session, (dag_id, run_id, task_id, map_index), readable_dags(user, session))
        if found is None:
            raise HTTPException(404, "no imagegate record for this task instance that you may read")
        raw, row = found
        return JSONResponse({"run": row.to_dict(), "record": raw}, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(links.page, status_code=307)

    return app

