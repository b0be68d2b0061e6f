"""Recovery: calls rebuilt from Asterisk's own records when AMI missed them.

Asterisk keeps two durable records of its calls: CEL (every channel event, to the microsecond)
and CDR (one record per channel pair, to the second). `cel` turns CEL rows into the same typed
events AMI gives, so the one `CallTracker` decides every record; `cdr` builds records from CDRs
where no CEL is kept. `cel_source` and `cdr` read Asterisk's files (read-only, by column name);
`rebuild` runs events through a tracker. No module here writes to Asterisk's files.
"""
