"""Recovery: calls rebuilt from Asterisk's own records when AMI missed them.

Asterisk keeps two durable records of its calls: CEL (every channel event, to the microsecond)
and CDR (one record per channel pair, to the second). `cel` turns CEL rows into the same typed
events AMI gives, so the one `CallTracker` decides every record (`rebuild`); `cdr_call` builds
a record from a call's CDRs where no CEL is kept. `cel_source` and `cdr` read Asterisk's files
read-only and by column name (`tables`, `file_source`, `times`); nothing here writes to them.
"""
