"""Every GraphQL, Python and shell example in README.md runs against a demo server.

The server holds the default demo dataset (`tcgraph demo`: 2,000 tasks, seed
1), as `scripts/serve` does. A GraphQL example fails on any error, and on any
null except list entries for keys the README calls `"nope"` (one per such
key); a Python or shell example fails if it raises or exits non-zero, and a
shell example's JSON output is held to the GraphQL rule. `http://127.0.0.1:8000`
in an example means the demo server. A block right after an HTML comment
starting `<!-- not run` is skipped (the comment says why): every other block
of these languages, whoever wrote it, is run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from graphql import (DocumentNode, FragmentDefinitionNode, ListTypeNode, NonNullTypeNode,
                     OperationDefinitionNode, parse)

from conftest import create_database, drop_database
from servers import serving
from tcgraph.api import graphiql
from tcgraph.config import Settings
from tcgraph.demo import write_demo
from tcgraph.server import create_app
from tcgraph.store.pool import open_pool

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE_URL = "http://127.0.0.1:8000"
LANGUAGES = {"graphql", "python", "sh"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def blocks() -> list[Block]:
    """The README's code blocks that are examples to run."""
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        language, code = match.group(1), match.group(2)
        before = text[:match.start()].rstrip().rsplit("\n", 1)[-1]
        if language in LANGUAGES and not before.startswith("<!-- not run"):
            found.append(Block(language, code, text.count("\n", 0, match.start()) + 1))
    return found


@pytest.fixture(scope="module")
def demo(server_url: str, template_database: str) -> Iterator[tuple[str, str]]:
    """(server URL, database URL) of a server on the default demo dataset."""

    async def create() -> tuple[str, str]:
        name, url = await create_database(server_url, template_database)
        pool = await open_pool(url, Settings(pool_max_size=2))
        try:
            await write_demo(pool)
        finally:
            await pool.close()
        return name, url

    name, url = asyncio.run(create())
    try:
        with serving(create_app(Settings(database_url=url), url)) as base:
            yield base, url
    finally:
        asyncio.run(drop_database(server_url, name))


def check_answer(body: object, document: str) -> None:
    """No errors; nulls only as list entries, one per `"nope"` key of the document."""
    assert isinstance(body, dict), body
    assert not body.get("errors"), body["errors"]
    assert body.get("data") is not None, body
    listed_nulls = 0

    def walk(value: object, path: str) -> None:
        nonlocal listed_nulls
        if isinstance(value, dict):
            for key, item in value.items():
                assert item is not None, f"{path}.{key} is null: the README promises data"
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if item is None:
                    listed_nulls += 1
                else:
                    walk(item, f"{path}[{i}]")

    walk(body["data"], "data")
    assert listed_nulls == document.count('"nope"'), (
        f"{listed_nulls} null list entries, for {document.count(chr(34) + 'nope' + chr(34))} "
        f'"nope" keys: {json.dumps(body)[:2000]}')


def operations(document: DocumentNode, source: str) -> Iterator[tuple[str, dict[str, object]]]:
    """Each operation of a block as a document of its own (with the block's fragments), and
    variables for it: an empty list for each required list, nothing for the rest."""
    fragments = "\n".join(source[d.loc.start:d.loc.end] for d in document.definitions
                          if isinstance(d, FragmentDefinitionNode) and d.loc)
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and definition.loc:
            variables: dict[str, object] = {}
            for variable in definition.variable_definitions or ():
                kind = variable.type
                if isinstance(kind, NonNullTypeNode) and isinstance(kind.type, ListTypeNode):
                    variables[variable.variable.name.value] = []
            text = source[definition.loc.start:definition.loc.end]
            yield text + ("\n" + fragments if fragments else ""), variables


@pytest.mark.parametrize("block", blocks(), ids=lambda b: b.name)
def test_readme_example(block: Block, demo: tuple[str, str]) -> None:
    base, database_url = demo
    code = block.code.replace(EXAMPLE_URL, base)
    if block.language == "graphql":
        with httpx.Client(base_url=base, timeout=60) as http:
            for document, variables in operations(parse(code), code):
                response = http.post("/graphql", json={"query": document, "variables": variables})
                check_answer(response.json(), document)
    elif block.language == "python":
        exec(compile(code, block.name, "exec"), {"__name__": "readme_example"})
    else:
        env = {**os.environ, "TCGRAPH_DATABASE_URL": database_url,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            return
        if isinstance(answer, dict) and "data" in answer:
            check_answer(answer, code)


def test_the_readme_has_examples_of_each_kind() -> None:
    assert {b.language for b in blocks()} == LANGUAGES


def test_graphiql_opens_on_a_document_with_data(demo: tuple[str, str]) -> None:
    base, _ = demo
    response = httpx.post(f"{base}/graphql", json={"query": graphiql.EXAMPLE})
    check_answer(response.json(), graphiql.EXAMPLE)
