"""Hosted MCP tools in /v1/responses: the gateway connects to MCP servers and runs their tools.

    spec     the ``mcp`` tool of a request: parsing, filters, secrets and their redaction
    policy   where MCP servers may live (https or allowlisted; no private addresses)
    names    MCP tools as model functions (``label__tool``), both ways
    client   the official ``mcp`` SDK over streamable HTTP: list tools, call tools
    loop     one response's tool loop bookkeeping: listing, approvals, limits, events
"""
