"""Health and metrics of the running agent, served over HTTP on `[http] listen`.

`snapshot` reads the agent's counters into one value, `verdict` decides from it whether the
agent is healthy (pure), `metrics` turns it into Prometheus text, and `http` serves both from
the agent's event loop.
"""
