"""Audit published localization claims: what the published figures support, what matched
runs say, and a combined verdict per claim (``causalloc audit``; schema in docs/claims.md)."""

from causalloc.audit.claims import Claim, load_claims
from causalloc.audit.published import audit_figures
from causalloc.audit.report import combined_verdict, write_audit
from causalloc.audit.runs import audit_runs

__all__ = ["Claim", "audit_figures", "audit_runs", "combined_verdict", "load_claims",
           "write_audit"]
