"""PostgreSQL: the pool, the migrations, the embedded server and every SQL statement."""
