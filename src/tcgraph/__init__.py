"""tcgraph: a GraphQL gateway for CI task data, batched through per-request DataLoaders."""

__version__ = "0.1.0"
