"""Local HTTP API (server) and the agent-side SDK client."""
