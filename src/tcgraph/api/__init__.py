"""The front doors: GraphQL (and the pieces it is built from)."""
