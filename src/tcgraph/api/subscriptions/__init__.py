"""GraphQL subscriptions fed by the change log (docs/subscriptions.md)."""
