"""Reconciling the vendor's invoice with botmeter's own records (docs/reconcile.md).

mapping (the vendor's columns) -> lines (one line read, pure) -> invoice (the file) ->
matching (SQL: pairs, one-to-one, classes) -> reconciler (the result) -> render (output).
"""
