"""Ledger: the append-only double-entry journal, payments, allocation, corrections, close."""
