"""GraphiQL, served entirely by tcgraph: the page at `/graphql` and every file it loads.

Decision tasks and private networks often reach no CDN, so the page refers to
nothing but this server. The built files are shipped in the package
(`static/graphiql/`, with `SOURCES.json` naming the npm package, version and
integrity each came from); `scripts/vendor-graphiql` refreshes them from the
versions pinned in `package-lock.json`. In an installation without them (a
broken one), `/graphql` says so (a coded 404).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from tcgraph.errors import error_body

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
STATIC_PATH = "/graphiql/static"
# In load order: GraphiQL's UMD build expects React and ReactDOM as globals.
SCRIPTS = ("react.production.min.js", "react-dom.production.min.js", "graphiql.min.js",
           "graphql-ws.min.js")
STYLESHEETS = ("graphiql.min.css",)
ASSETS = SCRIPTS + STYLESHEETS

# The editor's first document: on the demo dataset (what `scripts/serve` fills
# an empty database with) every field of it has data.
EXAMPLE = """\
# tcgraph: Taskcluster tasks, statuses, index paths and labels.
# Press Ctrl-Enter (or the play button) to run; the Docs panel lists every field.
query Example {
  label(label: "build-linux64/opt") {
    latest { taskId created status { state expires } }
    lastSuccess { taskId }
    history(first: 5) { nodes { taskId created status { state } } }
  }
  indexedTask(indexPath: "gecko.v2.autoland.latest.firefox.linux64-opt") {
    taskId
    task { label status { state } }
  }
  namespace(path: "gecko.v2") { namespaces(first: 10) { nodes { path } } }
}
"""

# The query and variables are read from `?q=` and `?variables=` (`?query=`
# would make /graphql run the query instead of showing the page), and kept
# there while editing so that the address can be shared.
_BOOT = """\
const params = new URLSearchParams(window.location.search);
function remember(name, value) {
  if (value) { params.set(name, value); } else { params.delete(name); }
  const search = params.toString();
  history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
}
/* Subscriptions: graphql-transport-ws on the same path (docs/subscriptions.md). */
const socketUrl = new URL(window.location.pathname, window.location.href);
socketUrl.protocol = socketUrl.protocol === "https:" ? "wss:" : "ws:";
const fetcher = GraphiQL.createFetcher({
  url: window.location.pathname,
  wsClient: graphqlWs.createClient({ url: socketUrl.href, lazy: true }),
});
ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultQuery: %(example)s,
    query: params.get("q") ?? undefined,
    variables: params.get("variables") ?? undefined,
    onEditQuery: function (query) { remember("q", query); },
    onEditVariables: function (variables) { remember("variables", variables); },
  }),
);
"""

_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tcgraph · GraphiQL</title>
<link rel="icon" href="data:,">
%(stylesheets)s
<style>body { margin: 0; } #graphiql { height: 100vh; }</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
%(scripts)s
<script>
%(boot)s</script>
</body>
</html>
"""

def missing_assets() -> list[str]:
    """The files the page needs that are not in `STATIC_DIR`."""
    return [name for name in ASSETS if not (STATIC_DIR / name).is_file()]


def page(request: Request) -> Response:
    """The GraphiQL page, or a coded 404 naming the missing files if any are missing.

    Not a 503: the endpoint itself works; only the page is absent.
    """
    missing = missing_assets()
    if missing:
        return Response(error_body(
            f"GraphiQL is not installed: {', '.join(missing)} missing from {STATIC_DIR}; "
            f"reinstall tcgraph, or in a tcgraph checkout run scripts/vendor-graphiql "
            f"(it needs Node.js and npm). "
            f"The GraphQL endpoint itself works: POST queries to this address.",
            "GRAPHIQL_NOT_INSTALLED", missing=missing), status_code=404,
            media_type="application/json")
    # Relative to the host, not absolute: a proxy may serve tcgraph under a prefix.
    base = html.escape(request.scope.get("root_path", "") + STATIC_PATH)
    return HTMLResponse(_PAGE % {
        "stylesheets": "\n".join(f'<link rel="stylesheet" href="{base}/{name}">'
                                 for name in STYLESHEETS),
        "scripts": "\n".join(f'<script src="{base}/{name}"></script>' for name in SCRIPTS),
        "boot": _BOOT % {"example": _js_string(EXAMPLE)},
    })


def static_files() -> StaticFiles:
    """The ASGI app serving `STATIC_DIR`, to mount at `STATIC_PATH`."""
    return _Assets(directory=STATIC_DIR, check_dir=False)


class _Assets(StaticFiles):
    async def check_config(self) -> None:
        # In an installation without the files the directory does not exist:
        # answer 404 (the page explains why) rather than StaticFiles' 500.
        if self.directory is not None and os.path.isdir(self.directory):
            await super().check_config()


def _js_string(text: str) -> str:
    """`text` as a JavaScript string literal that is also safe inside <script>."""
    return json.dumps(text).replace("<", "\\u003c")
