"""Scripted inbound voice-bot calls for the simulated PBX."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Literal

Outcome = Literal["handled", "transferred", "abandoned", "failed"]
#: how the bot sends its signals (docs/signals.md):
#: `UserEvent(BotMeter,...)`, `AGI(agi://host:port/botmeter/...)` or `AGI(botmeter-agi,...)`
SignalVia = Literal["userevent", "fastagi", "agi"]
SIGNAL_VIAS: tuple[SignalVia, ...] = ("userevent", "fastagi", "agi")
#: when the caller's satisfaction ratings (csat signals) are sent: "bot" while the bot talks
#: (with its other signals); "after_human" in a DTMF survey after the human hangs up (Queue's
#: `c` / Dial's `g` option keeps the caller in the dialplan); "caller_gone" from the caller
#: channel after its hangup, before the call's last channel (the caller's Local ;2) ends
Survey = Literal["bot", "after_human", "caller_gone"]
SURVEYS: tuple[Survey, ...] = ("bot", "after_human", "caller_gone")
#: virtual seconds the caller spends in a survey after the human (`Read` of one digit)
SURVEY_SECONDS = 2.0

#: virtual seconds a human's phone rings before they pick up (queue or dial handoff)
AGENT_RING_SECONDS = 1.0
#: virtual seconds a handoff rings unanswered before it gives up (human_seconds is None)
NO_ANSWER_SECONDS = 6.0
#: the queue and the directly dialled agent a handoff goes to
QUEUE_NAME = "support"
DIAL_AGENT = "agent1"
#: ARI bots (Stasis, like Asterisk AI Voice Agent): the Stasis application, how long the
#: bot briefs the human of a warm transfer before it joins them with the caller, and how long
#: it talks again to a caller whose warm transfer found nobody
ARI_APP = "asterisk-ai-voice-agent"
WARM_BRIEF_SECONDS = 2.0
WARM_RETURN_SECONDS = 2.0
#: `[bot] channels` for the ARI bots' media channels (ExternalMedia RTP, AudioSocket)
ARI_MEDIA_CHANNELS = ("UnicastRTP/*", "AudioSocket/*")
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
    handoff: Literal["queue", "dial", "warm"] = "queue"  # warm: an ARI bot's only
    signals: bool = True  # bot sends UserEvent(BotMeter, ...) usage + outcome signals
    via: Literal["local", "sip"] = "local"
    dialed_number: str = "4000"
    start_offset: float = 0.0  # virtual seconds after play() starts (used when rate is None)
    signal_via: SignalVia = "userevent"  # how the signals are sent (see SignalVia)
    #: "dialplan": the lab's voicebot context; "ari": a Stasis bot with a media channel that
    #: hands off by `continue` (queue, dial) or by a warm transfer in its own bridge (warm)
    bot: Literal["dialplan", "ari"] = "dialplan"
    media: Literal["rtp", "audiosocket"] = "rtp"  # an ARI bot's media channel
    #: a warm transfer nobody answers (human_seconds None): the caller hangs up on hold
    #: instead of coming back to the bot
    hangs_up_on_hold: bool = False
    #: the csat signals the call sends, in order: (Score, Scale) as the dialplan writes them
    #: (may be malformed, to be refused; a Scale of "" is left out), sent `survey`'s way
    csat: tuple[tuple[str, str], ...] = ()
    survey: Survey = "bot"
    #: the caller hangs up while the bot talks, `bot_seconds` after it answered (the lab's
    #: `caller_drop`): handled, and the bot never gets to send its signals
    caller_hangs_up: bool = False
    #: the bot platform's session id, sent in a `start` signal as the bot answers (None: no
    #: start signal); one the agent must drop (too long, not printable) may be sent too
    session: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in ("handled", "transferred", "abandoned", "failed"):
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.signal_via not in SIGNAL_VIAS:
            raise ValueError(f"signal_via must be one of {', '.join(SIGNAL_VIAS)}")
        if self.handoff not in ("queue", "dial", "warm") or self.via not in ("local", "sip"):
            raise ValueError("handoff must be queue|dial|warm and via local|sip")
        if self.bot not in ("dialplan", "ari") or self.media not in ("rtp", "audiosocket"):
            raise ValueError("bot must be dialplan|ari and media rtp|audiosocket")
        if self.bot == "ari" and (self.outcome == "failed" or self.signal_via != "userevent"):
            raise ValueError("an ARI bot's calls are handled, transferred or abandoned, and it "
                             "signals by ARI user events (signal_via userevent)")
        if self.handoff == "warm" and self.bot != "ari":
            raise ValueError("a warm transfer is an ARI bot's")
        if self.hangs_up_on_hold and not (self.handoff == "warm" and self.human_seconds is None
                                          and self.outcome == "transferred"):
            raise ValueError("hangs_up_on_hold is for a warm transfer nobody answers")
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
        if self.caller_hangs_up and (self.outcome != "handled" or self.bot != "dialplan"
                                     or self.csat):
            raise ValueError("caller_hangs_up is for a dialplan bot's handled call, no csat")
        if self.session is not None and (not self.signals or self.outcome == "abandoned"
                                         or "\r" in self.session or "\n" in self.session):
            raise ValueError("a session id is a single line, sent by a bot that answers and "
                             "signals")
        if self.survey not in SURVEYS:
            raise ValueError(f"survey must be one of {', '.join(SURVEYS)}")
        if self.csat:
            if self.bot != "dialplan" or self.outcome not in ("handled", "transferred"):
                raise ValueError("csat signals come from a dialplan bot's handled or "
                                 "transferred call")
            if self.survey == "after_human" and (self.outcome != "transferred"
                                                 or self.human_seconds is None):
                raise ValueError("a survey after the human needs a human who answered")
            if self.survey == "caller_gone" and (self.via != "local"
                                                 or self.outcome != "handled"):
                raise ValueError("a csat after the caller's hangup needs a handled Local call "
                                 "(its ;2 outlives the caller channel)")


def expected_record(call: ScriptedCall) -> dict[str, Any]:
    """What a correct agent records for `call` (fields of docs/calls.md).

    Times in seconds; `modules` maps module -> {"quantity", "unit"}. The same
    whichever way (`signal_via`) the signals are sent.
    """
    transferred = call.outcome == "transferred"
    answered = transferred and call.human_seconds is not None
    bot = None if call.outcome == "abandoned" else call.bot_seconds
    total = call.ring_seconds + (bot or 0.0)
    human = call.human_seconds
    if human is not None and call.csat and call.survey == "after_human":
        human += SURVEY_SECONDS  # the caller is still on the line: the call lasts longer
    if transferred:
        total += AGENT_RING_SECONDS + human if human is not None else NO_ANSWER_SECONDS
        if call.handoff == "warm" and human is None and not call.hangs_up_on_hold:
            total += WARM_RETURN_SECONDS  # back with the bot, which then ends the call
    modules: dict[str, dict[str, Any]] = {}
    if call.signals and not call.caller_hangs_up and call.outcome in ("handled", "transferred"):
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
        "human_seconds": human if answered else None,
        "total_seconds": round(total, 6),
        "transfer_answered": answered if transferred else None,
        "hangup_cause": cause,
        "modules": modules,
        "csat": expected_csat(call.csat),
        "bot_session_id": expected_session(call.session),
    }


def expected_session(session: str | None) -> str | None:
    """The session id a correct agent keeps (docs/signals.md#start), worked out here on its
    own: the value without surrounding spaces when it is 1-128 characters, all printable."""
    kept = (session or "").strip()
    return kept if 0 < len(kept) <= 128 and kept.isprintable() else None


def expected_csat(signals: tuple[tuple[str, str], ...]) -> dict[str, int] | None:
    """The rating a correct agent keeps: the last valid one (docs/signals.md#csat), worked out
    here on its own, not with botmeter's parser: Scale ASCII digits 2..10 (5 when empty),
    Score ASCII digits 1..Scale."""
    kept = None
    for score, scale in signals:
        score, scale = score.strip(), scale.strip() or "5"
        if not (score.isascii() and score.isdigit() and scale.isascii() and scale.isdigit()):
            continue
        if 2 <= int(scale) <= 10 and 1 <= int(score) <= int(scale):
            kept = {"score": int(score), "scale": int(scale)}
    return kept


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
    return with_sessions(with_surveys(calls, seed))


def with_surveys(calls: list[ScriptedCall], seed: int) -> list[ScriptedCall]:
    """Three in four calls that can be surveyed get a rating, from a random stream of their
    own (the calls' other values do not change): every third on a 10-point scale; every
    second transferred call whose human answered is surveyed after the human, and every
    fourth handled Local call from the caller channel after its hangup; every fifth keys a bad
    score first ("four", "0", "6", "4.5" in turn), which the agent must refuse."""
    rng = random.Random(seed + 1_000_003)
    out = []
    surveyed = 0
    for call in calls:
        if (call.signals and call.bot == "dialplan" and call.outcome in ("handled", "transferred")
                and rng.random() < 0.75):
            scale = "10" if surveyed % 3 == 2 else ""
            good = (str(rng.randint(1, int(scale or 5))), scale)
            bad = [(("four", "0", "6", "4.5")[surveyed // 5 % 4], "")] if surveyed % 5 == 4 else []
            survey: Survey = "bot"
            if call.human_seconds is not None and surveyed % 2 == 1:
                survey = "after_human"
            elif call.outcome == "handled" and call.via == "local" and surveyed % 4 == 3:
                survey = "caller_gone"
            call = replace(call, csat=(*bad, good), survey=survey)
            surveyed += 1
        out.append(call)
    return out


#: the session ids the simulated bots send (`{n}`: a number of the call's own): ids as bot
#: platforms make them, and ones with the characters the dialplan, AMI and URLs treat
#: specially, which must arrive unchanged whichever way the bot signals
_SESSIONS = (
    "conv-{n:08x}",
    "CA{n:032x}",
    "a&b=c,d%25 e/{n}?x#y",
    "会话 {n} · 呼入",
    'q"uo\\te (x) [{n}]',
)


def with_sessions(calls: list[ScriptedCall]) -> list[ScriptedCall]:
    """Two in three calls whose bot answers and signals get a session id (`_SESSIONS` in
    turn), numbered from their caller's number; the calls' other values do not change."""
    out = []
    eligible = given = 0
    for call in calls:
        if call.signals and call.outcome != "abandoned":
            if eligible % 3 != 2:
                template = _SESSIONS[given % len(_SESSIONS)]
                call = replace(call, session=template.format(n=int(call.caller_number)))
                given += 1
            eligible += 1
        out.append(call)
    return out


#: every ARI-bot flow (docs/calls.md): (outcome, handoff, a human answers, hangs up on hold)
_ARI_KINDS: tuple[tuple[Outcome, Literal["queue", "dial", "warm"], bool, bool], ...] = (
    ("handled", "queue", False, False),
    ("transferred", "queue", True, False),
    ("transferred", "dial", True, False),
    ("transferred", "warm", True, False),
    ("abandoned", "queue", False, False),
    ("transferred", "warm", False, False),
    ("transferred", "warm", False, True),
    ("transferred", "queue", False, False),
)


def ari_calls(count: int, seed: int = 11) -> list[ScriptedCall]:
    """Deterministic calls of an ARI voice bot: every flow of `_ARI_KINDS`, with both media
    kinds (RTP ExternalMedia, AudioSocket) in turn (16 calls give every flow with both),
    both ways in, signals on and off."""
    rng = random.Random(seed)
    calls: list[ScriptedCall] = []
    offset = 0.0
    for i in range(count):
        outcome, handoff, answered, on_hold = _ARI_KINDS[i % len(_ARI_KINDS)]
        calls.append(ScriptedCall(
            caller_number=f"137{rng.randrange(10**8):08d}",  # apart from mixed_calls' 139
            caller_name=rng.choice(_NAMES),
            outcome=outcome,
            ring_seconds=round(rng.uniform(0.5, 3.0), 1),
            bot_seconds=0.0 if outcome == "abandoned" else round(rng.uniform(2.0, 20.0), 1),
            human_seconds=round(rng.uniform(3.0, 15.0), 1) if answered else None,
            handoff=handoff,
            signals=i % 3 != 2,
            via="sip" if i % 5 == 4 else "local",
            start_offset=round(offset, 1),
            bot="ari",
            media="audiosocket" if (i + i // len(_ARI_KINDS)) % 2 else "rtp",
            hangs_up_on_hold=on_hold,
        ))
        offset += rng.uniform(0.5, 3.0)
    return with_sessions(calls)


def demo_calls(count: int) -> list[ScriptedCall]:
    """The demo's mix: dialplan-bot calls and, one in four, ARI-bot calls."""
    ari = count // 4
    return mixed_calls(count - ari) + ari_calls(ari)
