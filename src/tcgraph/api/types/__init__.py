"""The GraphQL object types: thin views over `tcgraph.model` rows.

Every field is declared once, here: its resolver, and where PostgreSQL can
compute the same value, how (`sql(...)` in its metadata, see api/sqljson.py).
Every relation a type exposes goes through the request's loaders
(`info.context.loaders`); no resolver here runs SQL itself.
"""
