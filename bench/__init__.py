"""tcgraph's performance benchmark (`python -m bench`, from the repository root).

W1-W4 (labels, index paths, a task-group page, the RFC's 900 + 900 questions)
answered by the SQL floor, tcgraph and PostGraphile v4 on one 200,000-task
database; see docs/performance.md.
"""
