"""`botmeter doctor` and `botmeter check-config`: one line per check, OK, WARN or FAIL, each
WARN and FAIL with its fix.

`findings` holds the result type and the exit code, `offline` the checks that need no network
(config, secret files, plans, database, listening ports), `ami` asks Asterisk (login, write and
read permissions, timestampevents, clock skew; `evidence` decides the read classes from what
arrives), `uplink` asks the vendor, and `run` puts them in order.
"""
