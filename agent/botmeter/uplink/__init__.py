"""The uplink: hourly (or daily) usage summaries per plan, queued in a durable outbox in the
local database and delivered to the vendor's billing API (docs/uplink.md)."""
