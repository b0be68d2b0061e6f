"""Roll-ups: the calls table summed by day (or 15-minute slot), kept exact by triggers.

A report over a month of a million calls cannot read a million rows in two seconds, so the
calls are also kept summed, per UTC day or slot, in a few small tables that SQLite's triggers
update in the same transaction as every write to `calls` (insert, replace, update, delete),
whatever writes it. Each table is a `Family`: key expressions and summed integer values over
one call row. The same expressions give the table's rows (triggers), fill it from the calls
(migration) and sum the calls directly (`rollup_query.totals`, for the part of a range that
does not cover whole days), so the three can never disagree.

Every value is a whole number (counts, milliseconds, millionths), so adding a row and
subtracting it again leaves exactly nothing. A NULL key is stored as an empty blob (UNIQUE
treats NULLs as distinct) and read back as None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: whole milliseconds between two stored ISO times of row {c} (NULL when either is NULL):
#: the rating reads its time meters this way (reports/plan_usage.py)
MS = "CAST(round((julianday({c}.%s) - julianday({c}.%s)) * 86400000) AS INTEGER)"
RING = ("max(0, CAST(round((julianday(coalesce({c}.bot_answered_at, {c}.ended_at)) "
        "- julianday({c}.offered_at)) * 86400000) AS INTEGER))")
#: a decimal text in whole millionths; beyond a billion (never written by botmeter: a hand
#: edit) nothing, so that every sum stays a whole number SQLite adds exactly
MICRO = "(CASE WHEN abs({q}) < 1e9 THEN CAST(round({q} * 1000000) AS INTEGER) END)"
#: the quantity is plain decimal text of at most 15 characters and 6 decimals, below a
#: billion, so its millionths are exact (reports/plan_usage.py explains)
QUANTITY_OK = ("typeof({q}) = 'text' AND length({q}) <= 15 AND abs({q}) < 1e9 "
               "AND {q} GLOB '[0-9]*' "
               "AND NOT {q} GLOB '*[^0-9.]*' AND {q} NOT LIKE '%.%.%' "
               "AND (instr({q}, '.') = 0 OR length({q}) - instr({q}, '.') <= 6)")
#: a stored bot_seconds / human wait in whole milliseconds, as the report's percentiles read
SECONDS_MS = "(CASE WHEN abs({c}.%s) < 1e9 THEN CAST(round({c}.%s * 1000) AS INTEGER) END)"
BOT_MS = SECONDS_MS % ("bot_seconds", "bot_seconds")
WAIT_MS = MS % ("human_answered_at", "transferred_at")
BOT_TIMED = "{c}.bot_answered_at IS NOT NULL AND {c}.bot_seconds IS NOT NULL"
WAITED = ("{c}.outcome = 'transferred' AND {c}.human_answered_at IS NOT NULL "
          "AND {c}.transferred_at IS NOT NULL")
#: a 15-minute UTC slot of offered_at: `2026-11-26T07:45`
SLOT = ("substr({c}.offered_at, 1, 14) || "
        "printf('%02d', CAST(substr({c}.offered_at, 15, 2) AS INTEGER) / 15 * 15)")
OFFERED_DAY = "substr({c}.offered_at, 1, 10)"
ENDED_DAY = "substr({c}.ended_at, 1, 10)"
NONE = "x''"  # a NULL key as stored


#: one row per duration metric of a call (joined with each call: SQLite has no LATERAL)
_USAGE_METRICS = "(SELECT 'bot' AS metric UNION ALL SELECT 'call' UNION ALL SELECT 'ring') AS m"
_USAGE_MS = "(CASE m.metric WHEN 'bot' THEN {bot_ms} WHEN 'call' THEN {call_ms} ELSE {ring_ms} END)"
_DURATION_KINDS = "(SELECT 'bot' AS kind UNION ALL SELECT 'wait') AS k"
_DURATION_MS = f"(CASE k.kind WHEN 'bot' THEN {BOT_MS} ELSE {WAIT_MS} END)"
_MODULES = ("json_each(CASE WHEN json_valid({c}.modules) AND json_type({c}.modules) = 'object' "
            "THEN {c}.modules ELSE '{{}}' END) AS usage")
_LINES = ("json_each(CASE WHEN json_valid({c}.charges) AND json_type({c}.charges) = 'array' "
          "THEN {c}.charges ELSE '[]' END) AS line")
_QUANTITY = "json_extract(usage.value, '$[0]')"


@dataclass(frozen=True, slots=True)
class Family:
    """A roll-up table: `keys` and summed `values` (name, SQL over the call row `{c}`),
    for the rows (and joined `joins`) where `where` holds; `reads` are the calls columns the
    expressions read (an update of another column leaves the table as it is). A family whose
    rows depend on other calls too gives, in `changes`, the rows a write adds or takes out
    (its triggers use them; its sums over the calls use `where`)."""

    table: str
    keys: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str], ...]
    reads: tuple[str, ...]
    where: str = "1"
    joins: tuple[str, ...] = ()
    #: the rows a write changes, when more than the call's own (`where`): see REPEATS
    changes: str | None = None
    #: values computed once per call (name, SQL over `{c}`), named `{name}` in the others
    derived: tuple[tuple[str, str], ...] = ()

    def sql(self, template: str, row: str, alias: str | None = None) -> str:
        """A template over call row `row`, its derived values read from `alias` (None: each
        written out)."""
        fields = {name: f"{alias}.{name}" if alias else f"({expr.format(c=row)})"
                  for name, expr in self.derived}
        return template.format(c=row, **fields)

    def calls_source(self, where: str, index: str = "") -> str:
        """FROM `calls` (the rows where `where` holds, through `index` if given), with the
        derived values as columns."""
        table = f"calls INDEXED BY {index}" if index else "calls"
        if not self.derived:
            return table
        columns = ", ".join(f"{expr.format(c='calls')} AS {name}" for name, expr in self.derived)
        return f"(SELECT calls.*, {columns} FROM {table} WHERE {where} LIMIT -1) AS calls"

    def key_names(self) -> list[str]:
        return [name for name, _ in self.keys]

    def value_names(self) -> list[str]:
        return [name for name, _ in self.values]

    def select(self, row: str, sign: int = 1, alias: str | None = None,
               keys: Mapping[str, str] | None = None) -> str:
        """SELECT list: the keys and (sign x) values of call row `row`; `keys` may give
        other SQL for some keys."""
        # a key is never NULL, whatever a hand edit stored: a trigger must never fail a write
        chosen = [(name, (keys or {}).get(name) or self.sql(expr, row, alias))
                  for name, expr in self.keys]
        selected = [f"ifnull({expr}, {NONE}) AS {name}" for name, expr in chosen]
        values = [f"{'-' if sign < 0 else ''}coalesce({self.sql(expr, row, alias)}, 0) AS {name}"
                  for name, expr in self.values]
        return ", ".join(selected + values)

    def joined(self, row: str) -> str:
        return ", ".join(j.format(c=row) for j in self.joins)

    def contribution(self, row: str, sign: int, source: str = "") -> str:
        """SELECT: the (sign x) contribution of call row `row` (NEW, OLD, or the alias
        `prior` of `calls` in `source`), one row per key."""
        sources = [s for s in (source, self.joined(row)) if s]
        alias = None
        if self.derived and not source:  # NEW or OLD: the derived values once, in a subquery
            alias = "x"
            columns = ", ".join(f"{e.format(c=row)} AS {n}" for n, e in self.derived)
            sources.append(f"(SELECT {columns}) AS x")
        keys = ", ".join(self.key_names())
        sums = ", ".join(f"sum({v}) AS {v}" for v in self.value_names())
        return (f"SELECT {keys}, {sums} FROM (SELECT {self.select(row, sign, alias)}"
                + (f" FROM {', '.join(sources)}" if sources else "")
                + f" WHERE {self.sql(self.changes or self.where, row, alias)}"
                + (" AND prior.call_id = NEW.call_id" if source else "")
                + f") GROUP BY {keys}")

    def add(self, row: str, sign: int, source: str = "") -> str:
        """Statements adding (sign x) a call row's contribution. Not an UPSERT: the conflict
        clause of the statement that fires a trigger (INSERT OR REPLACE) overrides the one
        of the statements inside it, so the rows are made first and then added to."""
        contribution = self.contribution(row, sign, source)
        keys = self.key_names()
        match = " AND ".join(f"t.{k} = c.{k}" for k in keys)
        zeros = ", ".join("0" for _ in self.values)
        update = ", ".join(f"{v} = {self.table}.{v} + c.{v}" for v in self.value_names())
        target = " AND ".join(f"{self.table}.{k} = c.{k}" for k in keys)
        return (f"INSERT INTO {self.table} ({', '.join(keys + self.value_names())}) "
                f"SELECT {', '.join(keys)}, {zeros} FROM ({contribution}) AS c "
                f"WHERE NOT EXISTS (SELECT 1 FROM {self.table} AS t WHERE {match}); "
                f"UPDATE {self.table} SET {update} FROM ({contribution}) AS c "
                f"WHERE {target}")

    def create(self) -> list[str]:
        """The table and its four triggers."""
        columns = ", ".join([f"{k} NOT NULL" for k in self.key_names()]
                            + [f"{v} INTEGER NOT NULL" for v in self.value_names()])
        t = self.table
        reads = ", ".join(self.reads)
        return [
            f"CREATE TABLE IF NOT EXISTS {t} ({columns}, "
            f"PRIMARY KEY ({', '.join(self.key_names())})) WITHOUT ROWID",
            f"CREATE TRIGGER IF NOT EXISTS {t}_insert AFTER INSERT ON calls BEGIN "
            f"{self.add('NEW', 1)}; END",
            # INSERT OR REPLACE deletes the old row, firing the DELETE triggers only when the
            # connection has recursive_triggers on (sqlite-utils turns it on, sqlite3 leaves
            # it off): take the old row out here, and mark it so the DELETE trigger skips it
            f"CREATE TRIGGER IF NOT EXISTS {t}_replace BEFORE INSERT ON calls "
            "WHEN EXISTS (SELECT 1 FROM calls WHERE call_id = NEW.call_id) BEGIN "
            f"{self.add('prior', -1, 'calls AS prior')}; END",
            f"CREATE TRIGGER IF NOT EXISTS {t}_update AFTER UPDATE OF {reads} ON calls BEGIN "
            f"{self.add('OLD', -1)}; {self.add('NEW', 1)}; END",
            f"CREATE TRIGGER IF NOT EXISTS {t}_delete AFTER DELETE ON calls "
            f"WHEN NOT EXISTS (SELECT 1 FROM {REPLACING} WHERE call_id = OLD.call_id) BEGIN "
            f"{self.add('OLD', -1)}; END",
        ]

    def fill(self) -> str:
        """INSERT summing every stored call into the (empty) table."""
        names = self.key_names() + self.value_names()
        sums = ", ".join(f"sum({v})" for v in self.value_names())
        joins = self.joined("calls")
        return (f"INSERT INTO {self.table} ({', '.join(names)}) "
                f"SELECT {', '.join(self.key_names())}, {sums} FROM ("
                f"SELECT {self.select('calls', 1, 'calls')} FROM {self.calls_source('1')}"
                f"{', ' + joins if joins else ''} "
                f"WHERE {self.sql(self.where, 'calls', 'calls')}) AS c "
                f"GROUP BY {', '.join(str(i + 1) for i in range(len(self.keys)))}")


_OUTCOME = ("outcome", "{c}.outcome")
_DAYS = (("offered_day", OFFERED_DAY), ("ended_day", ENDED_DAY))

#: calls per 15-minute slot: every count and sum of the report's rows, totals and charts
SLOTS = Family(
    "rollup_slots",
    keys=(("slot", SLOT), _OUTCOME, ("plan_id", "{c}.plan_id"),
          ("dialed_number", "{c}.dialed_number"),
          ("transfer_target", "{c}.transfer_target")),
    values=(("calls", "1"),
            ("bot_answered", "{c}.bot_answered_at IS NOT NULL"),
            ("transfer_answered",
             "{c}.outcome = 'transferred' AND {c}.human_answered_at IS NOT NULL"),
            ("cost", "CASE WHEN {c}.plan_id IS NOT NULL THEN " + MICRO.format(q="{c}.cost")
             + " END"),
            ("bot_ms", "CASE WHEN {c}.bot_answered_at IS NOT NULL THEN "
             + BOT_MS + " END"),
            ("human_ms", SECONDS_MS % ("human_seconds", "human_seconds")),
            ("abandoned_ring_ms", "CASE WHEN {c}.outcome = 'abandoned' "
             f"THEN {SECONDS_MS % ('ring_seconds', 'ring_seconds')} END"),
            ("bot_timed", BOT_TIMED)),
    reads=("offered_at", "outcome", "plan_id", "dialed_number", "transfer_target",
           "bot_answered_at", "human_answered_at", "cost", "bot_seconds", "human_seconds",
           "ring_seconds"))

#: the time meters' milliseconds (`metric`: bot, call, ring_a for calls the bot answered,
#: ring_u for the others: one ring row per call) per whole second rounded up (`sec`; 0 for
#: none, -1 for a time that cannot be read), with how many
#: were whole seconds exactly (`whole`) and their sum (`ms`): enough to apply any minimum,
#: first block and block of whole seconds per call (reports/plan_usage.py)
USAGE = Family(
    "rollup_usage",
    keys=(*_DAYS, _OUTCOME,
          ("metric", "CASE WHEN m.metric = 'ring' THEN CASE WHEN {c}.bot_answered_at IS NULL "
                     "THEN 'ring_u' ELSE 'ring_a' END ELSE m.metric END"),
          ("sec", f"CASE WHEN {_USAGE_MS} IS NULL THEN -1 WHEN {_USAGE_MS} <= 0 THEN 0 "
                  f"ELSE ({_USAGE_MS} + 999) / 1000 END")),
    values=(("n", "1"), ("whole", f"{_USAGE_MS} % 1000 = 0"), ("ms", _USAGE_MS)),
    reads=("offered_at", "ended_at", "outcome", "bot_answered_at", "bot_ended_at"),
    where=f"({_USAGE_MS} IS NOT NULL OR m.metric = 'ring')",
    joins=(_USAGE_METRICS,),
    derived=(("bot_ms", MS % ("bot_ended_at", "bot_answered_at")),
             ("call_ms", MS % ("ended_at", "bot_answered_at")), ("ring_ms", RING)))

#: the satisfaction ratings as stored, per outcome
CSAT = Family(
    "rollup_csat",
    keys=(*_DAYS, _OUTCOME, ("csat", "{c}.csat")),
    values=(("n", "1"),),
    reads=("offered_at", "ended_at", "outcome", "csat"),
    where="{c}.csat IS NOT NULL")

#: module usage per (module, unit): calls, the quantities in millionths (all; and those that
#: are exact, `ok`), and how many are not (`bad`: the rating refuses them)
MODULES = Family(
    "rollup_modules",
    keys=(*_DAYS, _OUTCOME, ("module", "usage.key"),
          ("unit", "json_extract(usage.value, '$[1]')")),
    values=(("n", "1"),
            ("micro", MICRO.format(q=_QUANTITY)),
            ("ok_micro", f"CASE WHEN {QUANTITY_OK.format(q=_QUANTITY)} THEN "
                         f"{MICRO.format(q=_QUANTITY)} END"),
            ("bad", f"{_QUANTITY} IS NOT NULL AND NOT ({QUANTITY_OK.format(q=_QUANTITY)})")),
    reads=("offered_at", "ended_at", "outcome", "modules"),
    where="{c}.modules IS NOT NULL",
    joins=(_MODULES,))

#: bot seconds and human waits per whole second rounded down, for percentiles and the
#: histogram (the exact values of one second come from the expression indexes below)
DURATIONS = Family(
    "rollup_durations",
    keys=(("offered_day", OFFERED_DAY), ("kind", "k.kind"),
          ("sec", f"CASE WHEN {_DURATION_MS} >= 0 THEN {_DURATION_MS} / 1000 "
                  f"ELSE -((999 - {_DURATION_MS}) / 1000) END")),
    values=(("n", "1"),),
    reads=("offered_at", "bot_answered_at", "bot_seconds", "outcome", "human_answered_at",
           "transferred_at"),
    where=f"CASE k.kind WHEN 'bot' THEN {BOT_TIMED} ELSE {WAITED} END "
          f"AND {_DURATION_MS} IS NOT NULL",
    joins=(_DURATION_KINDS,))

#: the stored amounts by the day the call ended, per plan
COST = Family(
    "rollup_cost",
    keys=(("ended_day", ENDED_DAY), ("plan_id", "{c}.plan_id")),
    values=(("n", "1"), ("cost", MICRO.format(q="{c}.cost"))),
    reads=("ended_at", "plan_id", "cost"),
    where="{c}.plan_id IS NOT NULL")

#: the stored rating lines' metered quantities in millionths, per plan and charge
METERED = Family(
    "rollup_metered",
    keys=(("ended_day", ENDED_DAY), ("plan_id", "{c}.plan_id"),
          ("charge", "json_extract(line.value, '$[0]')")),
    values=(("n", "1"), ("metered", MICRO.format(q="json_extract(line.value, '$[1]')"))),
    reads=("ended_at", "plan_id", "charges"),
    where="{c}.plan_id IS NOT NULL AND {c}.charges IS NOT NULL",
    joins=(_LINES,))

#: the calls being replaced by an INSERT OR REPLACE (their DELETE trigger skips them)
REPLACING = "rollup_replacing"
_REPLACING_SQL = (
    f"CREATE TABLE IF NOT EXISTS {REPLACING} (call_id TEXT PRIMARY KEY) WITHOUT ROWID",
    f"CREATE TRIGGER IF NOT EXISTS {REPLACING}_mark BEFORE INSERT ON calls "
    "WHEN EXISTS (SELECT 1 FROM calls WHERE call_id = NEW.call_id) BEGIN "
    f"INSERT INTO {REPLACING} (call_id) SELECT NEW.call_id WHERE NOT EXISTS "
    f"(SELECT 1 FROM {REPLACING} WHERE call_id = NEW.call_id); END",
    f"CREATE TRIGGER IF NOT EXISTS {REPLACING}_clear AFTER INSERT ON calls BEGIN "
    f"DELETE FROM {REPLACING} WHERE call_id = NEW.call_id; END",
)

#: a caller number's call before {c} (at or before its time, in (offered_at, call_id)
#: order; {c} itself left out) and the one after it
_NEIGHBOUR = ("(SELECT n.offered_at FROM calls AS n WHERE n.caller_number = {{c}}.caller_number "
              "AND (n.offered_at, n.call_id) {op} ({{c}}.offered_at, {{c}}.call_id) "
              "AND n.call_id <> {{c}}.call_id ORDER BY n.offered_at {order}, n.call_id {order} "
              "LIMIT 1)")
_PREVIOUS = _NEIGHBOUR.format(op="<", order="DESC")
_NEXT = _NEIGHBOUR.format(op=">", order="ASC")
#: a call is a repeat when its number called at most 24 hours (class 1) or 7 days (class 2)
#: before; 0 otherwise
_GAP = "CAST(round((julianday({later}) - julianday({earlier})) * 86400000) AS INTEGER)"
REPEAT_CLASS = ("CASE WHEN {earlier} IS NULL THEN 0 WHEN " + _GAP + " <= 86400000 THEN 1 "
          "WHEN " + _GAP + " <= 604800000 THEN 2 ELSE 0 END")
#: part 0: the call itself (its previous call); a write also moves the next call of its
#: number: part 1 takes out its class against the call before, part 2 adds it against this one
_PART_LATER = "CASE part.n WHEN 0 THEN {c}.offered_at ELSE {next} END"
_PART_EARLIER = "CASE part.n WHEN 2 THEN {c}.offered_at ELSE {previous} END"
_PART_CLASS = REPEAT_CLASS.format(later=_PART_LATER, earlier=_PART_EARLIER)

#: repeat callers: calls per (day offered, UTC day of the number's previous call, class);
#: `prev_day` is empty for class 0. The report counts those whose previous call is in its
#: window (reports/repeat.py)
REPEATS = Family(
    "rollup_repeats",
    keys=(("offered_day", f"substr({_PART_LATER}, 1, 10)"),
          ("prev_day", f"CASE WHEN {_PART_CLASS} = 0 THEN '' "
                       f"ELSE substr({_PART_EARLIER}, 1, 10) END"),
          ("class", _PART_CLASS)),
    values=(("n", "CASE part.n WHEN 1 THEN -1 ELSE 1 END"),),
    reads=("caller_number", "offered_at"),
    where="{c}.caller_number <> '' AND part.n = 0",
    changes="{c}.caller_number <> '' AND (part.n = 0 OR {next} IS NOT NULL)",
    joins=("(SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2) AS part",),
    derived=(("previous", _PREVIOUS), ("next", _NEXT)))

FAMILIES = (SLOTS, USAGE, CSAT, MODULES, DURATIONS, COST, METERED, REPEATS)

#: the exact values of one second of the durations family: a sorted column per kind
def _bare(expression: str) -> str:
    """An expression over `calls` without the table name (index expressions refuse it)."""
    return expression.format(c="calls").replace("calls.", "")


DURATION_INDEXES = {
    "bot": ("calls_bot_ms", _bare(BOT_MS), _bare(BOT_TIMED)),
    "wait": ("calls_wait_ms", _bare(WAIT_MS), _bare(WAITED)),
}


def create_rollups(run: Callable[..., Any]) -> None:
    """Create the roll-up tables, triggers and indexes, filled from the stored calls; `run`
    executes one statement (a Connection's or sqlite-utils Database's `execute`)."""
    for statement in _REPLACING_SQL:
        run(statement)
    for family in FAMILIES:
        exists = run("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                     (family.table,)).fetchone() is not None
        for statement in family.create():
            run(statement)
        if not exists:
            run(family.fill())
    for name, expression, where in DURATION_INDEXES.values():
        run(f"CREATE INDEX IF NOT EXISTS {name} ON calls ({expression}, offered_at) "
            f"WHERE {where}")
