"""Auditor and finance tooling over the ledger alone (never imports gateway/)."""
