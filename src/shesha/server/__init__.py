"""`shesha serve`: the HTTP API, the query line, security and MCP. Imported on demand:
the CLI reaches a server through shesha.client without importing this."""
