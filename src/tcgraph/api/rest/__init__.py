"""Taskcluster's read API for the queue and the index, answered from tcgraph's store.

Tools that call Taskcluster through the `taskcluster` client (taskgraph's optimizer among
them) work unchanged with their root URL pointed here: the routes, checks, bodies, page
sizes, tokens, timestamps and error replies are Taskcluster's (`docs/taskcluster.md` lists
what differs, and why). One method is tcgraph's own: RFC 188's label -> status of the
latest task (`labels`).

Every lookup goes through the request's loaders (`Context.create`), the DataLoaders and
SQL that GraphQL uses; this package holds no SQL. `endpoint` turns a method into a route,
`pages` pages as Taskcluster does, `shapes` writes Taskcluster's JSON, `errors` its error
replies; `routes` gathers every method's route.
"""
