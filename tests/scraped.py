"""What GET /metrics reports, read as Prometheus reads it: samples by name and labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(response: httpx.Response) -> Samples:
    """Every sample of a /metrics answer, by (name, sorted labels)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series has not been written yet)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)
