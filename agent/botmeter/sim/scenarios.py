"""Scripted inbound voice-bot calls for the simulated PBX."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["handled", "transferred", "abandoned", "failed"]
#: how the bot sends its signals (docs/signals.md):
#: `UserEvent(BotMeter,...)`, `AGI(agi://host:port/botmeter/...)` or `AGI(botmeter-agi,...)`
SignalVia = Literal["userevent", "fastagi", "agi"]
SIGNAL_VIAS: tuple[SignalVia, ...] = ("userevent", "fastagi", "agi")

#: virtual seconds a human's phone rings before they pick up (queue or dial handoff)
AGENT_RING_SECONDS = 1.0
#: virtual seconds a handoff rings unanswered before it gives up (human_seconds is None)
NO_ANSWER_SECONDS = 6.0
#: the queue and the directly dialled agent a handoff goes to
QUEUE_NAME = "support"
DIAL_AGENT = "agent1"
#: usage the bot reports per call (when signals are on and it does not fail), like the lab
NLU_REQUESTS = 2


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One inbound call, as the simulated PBX will play it."""

    caller_number: str
    caller_name: str  # may be non-ASCII UTF-8, or "" (sent as <unknown>)
    outcome: Outcome
    ring_seconds: float  # offered -> bot answers (or -> caller hangs up if abandoned)
    bot_seconds: float = 0.0  # time in the bot (0 for abandoned)
    human_seconds: float | None = None  # transferred: talk time after a human answers
    handoff: Literal["queue", "dial"] = "queue"
    signals: bool = True  # bot sends UserEvent(BotMeter, ...) usage + outcome signals
    via: Literal["local", "sip"] = "local"
    dialed_number: str = "4000"
    start_offset: float = 0.0  # virtual seconds after play() starts (used when rate is None)
    signal_via: SignalVia = "userevent"  # how the signals are sent (see SignalVia)

    def __post_init__(self) -> None:
        if self.outcome not in ("handled", "transferred", "abandoned", "failed"):
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.signal_via not in SIGNAL_VIAS:
            raise ValueError(f"signal_via must be one of {', '.join(SIGNAL_VIAS)}")
        if self.handoff not in ("queue", "dial") or self.via not in ("local", "sip"):
            raise ValueError("handoff must be queue|dial and via local|sip")
        if min(self.ring_seconds, self.bot_seconds, self.start_offset) < 0:
            raise ValueError("times must not be negative")
        if self.outcome == "abandoned" and self.bot_seconds:
            raise ValueError("an abandoned call never reaches the bot: bot_seconds must be 0")
        if self.human_seconds is not None and (
            self.outcome != "transferred" or self.human_seconds < 0
        ):
            raise ValueError("human_seconds is only for transferred calls, and >= 0")
        for text in (self.caller_number, self.caller_name, self.dialed_number):
            if "\r" in text or "\n" in text:
                raise ValueError("caller id and dialed number must be single-line")
        if not self.dialed_number:
            raise ValueError("dialed_number must not be empty")


def expected_record(call: ScriptedCall) -> dict[str, Any]:
    """What a correct agent records for `call` (fields of docs/calls.md).

    Times in seconds; `modules` maps module -> {"quantity", "unit"}. The same
    whichever way (`signal_via`) the signals are sent.
    """
    transferred = call.outcome == "transferred"
    answered = transferred and call.human_seconds is not None
    bot = None if call.outcome == "abandoned" else call.bot_seconds
    total = call.ring_seconds + (bot or 0.0)
    if transferred:
        human = call.human_seconds
        total += AGENT_RING_SECONDS + human if human is not None else NO_ANSWER_SECONDS
    modules: dict[str, dict[str, Any]] = {}
    if call.signals and call.outcome in ("handled", "transferred"):
        modules = {
            "asr": {"quantity": call.bot_seconds, "unit": "seconds"},
            "nlu": {"quantity": NLU_REQUESTS, "unit": "requests"},
        }
    if call.outcome == "failed":
        cause = 41
    elif call.outcome == "abandoned" and call.via == "sip":
        cause = 0  # a SIP CANCEL while ringing: Asterisk reports cause 0
    else:
        cause = 16
    return {
        "caller_number": call.caller_number or None,
        "caller_name": call.caller_name or None,
        "dialed_number": call.dialed_number,
        "outcome": call.outcome,
        "ring_seconds": call.ring_seconds,
        "bot_seconds": bot,
        "human_seconds": call.human_seconds if answered else None,
        "total_seconds": round(total, 6),
        "transfer_answered": answered if transferred else None,
        "hangup_cause": cause,
        "modules": modules,
    }


_NAMES = (
    "张三", "李四", "王小明", "陳大文", "刘洋", "Alice", "Bob", "María José",
    "Ünïcødé", "", "黄丽", "Müller", "赵六", "", "周杰", "O'Brien",
)

# (outcome, handoff, a human answers) - cycled so any 8 consecutive calls cover every kind
_KINDS: tuple[tuple[Outcome, Literal["queue", "dial"], bool], ...] = (
    ("handled", "queue", False),
    ("transferred", "queue", True),
    ("abandoned", "queue", False),
    ("transferred", "dial", True),
    ("failed", "queue", False),
    ("handled", "queue", False),
    ("transferred", "queue", False),
    ("transferred", "dial", False),
)


def mixed_calls(count: int, seed: int = 7,
                signal_via: SignalVia | None = None) -> list[ScriptedCall]:
    """Deterministic mix of every outcome, via, handoff and signals on/off.

    Realistic small times (ring 0.5-4 s, bot 2-30 s, human 3-20 s), staggered
    start offsets, caller names including Chinese. Every call signals by
    `signal_via` ("userevent" when None); nothing else depends on it.
    """
    via_signals: SignalVia = signal_via or "userevent"
    if via_signals not in SIGNAL_VIAS:
        raise ValueError(f"signal_via must be one of {', '.join(SIGNAL_VIAS)}")
    rng = random.Random(seed)
    calls: list[ScriptedCall] = []
    offset = 0.0
    for i in range(count):
        outcome, handoff, answered = _KINDS[i % len(_KINDS)]
        bot = 0.0 if outcome == "abandoned" else round(rng.uniform(2.0, 30.0), 1)
        human = round(rng.uniform(3.0, 20.0), 1) if answered else None
        calls.append(
            ScriptedCall(
                caller_number=f"139{rng.randrange(10**8):08d}",
                caller_name=rng.choice(_NAMES),
                outcome=outcome,
                ring_seconds=round(rng.uniform(0.5, 4.0), 1),
                bot_seconds=bot,
                human_seconds=human,
                handoff=handoff,
                signals=i % 4 != 3,
                via="sip" if i % 3 == 2 else "local",
                dialed_number="4000",
                start_offset=round(offset, 1),
                signal_via=via_signals,
            )
        )
        offset += rng.uniform(0.5, 3.0)
    return calls
