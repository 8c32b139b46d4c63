# tcgraph against an external PostgreSQL (see docker-compose.yml).

FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system tcgraph

USER tcgraph
ENV TCGRAPH_HOST=0.0.0.0 \
    TCGRAPH_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready')"
CMD ["tcgraph", "serve"]
