"""A simulated Asterisk PBX (AMI over TCP) playing scripted voice-bot calls.

Used by `botmeter demo` and by live tests of the agent.
"""

from agent.sim.events import CallIds, SimEvent, call_events
from agent.sim.pbx import SimulatedPBX
from agent.sim.scenarios import Outcome, ScriptedCall, expected_record, mixed_calls

__all__ = [
    "CallIds",
    "Outcome",
    "ScriptedCall",
    "SimEvent",
    "SimulatedPBX",
    "call_events",
    "expected_record",
    "mixed_calls",
]
