"""The fault-injection suite: the agent, the simulated PBX and the vendor's receiver as real
processes on loopback, with the agent killed, its AMI link cut, the PBX restarted, the
database locked and the receiver flapping; each run judged against the PBX's truth file.
`python -m tests.faults [--full]` prints the table of figures (harness.py)."""
