"""Every read statement tcgraph runs, one module per table, each statement next
to the index it relies on.

Reads take arrays of keys and answer a whole DataLoader batch in one statement:
`= ANY($1)` for plain key lookups, and `unnest(...) WITH ORDINALITY` plus a
LATERAL probe where each key needs its own ordered, limited scan (latest per
label, one page per parent). A LATERAL probe with a LIMIT stays an index lookup
under every plan PostgreSQL may choose, where a plain join (or a LATERAL
subquery the planner flattens into one) can fall back to hashing a table.

Writes live in store/writes.py.
"""
