"""Rating: price calls under a vendor's plan files (docs/plans.md), with Decimal
semantics computed exactly in scaled integers.

Public API
----------
- `load_plan(path) -> PlanVersion`, `PlanBook.load(dir)`, `book.series(plan_id) -> PlanSeries`;
  bad files raise `PlanError` (`<file>: <key>: <reason>`). `book.warnings` (and
  `series.warnings`): lines `<file>: fee[n]: <why>` naming once fees no period can bill, for
  the loader's caller to log.
- `rate_calls(calls, plan) -> {call_id: CallCharge}`; `plan` is a PlanVersion or a PlanSeries.
  Calls offered before the plan starts get no entry.
- `Rater(plan, on_not_rated=...).rate(call)` for one arriving call (O(1)); on
  `RerateNeeded(period)` call `Rater.rerate(period, all_calls_of_that_period)` and store every
  amount it returns. A call offered before the plan starts: `rate` raises `NotRated` (a
  RatingError naming the call), `rerate` leaves it out and calls `on_not_rated(call, why)`.
- `build_statement(plan, period, calls) -> Statement` (`.to_json()` per Semantics 5, plus an
  `"sla"` list: every clause's `SlaClause.to_json()`); `Statement.sla_clauses` are the plan's
  SLA clauses with what was measured and the verdict, `.sla` / `.csat` their raw measures
  (`measure_sla`, `measure_csat`). A period that ends before the plan starts raises
  `NoStatement` (a PlanError naming the plan's first file: there is no statement, fees
  included).
- `compare_plans(plans, period, calls, active=...) -> Comparison` (`.rows()`, `.sla_rows()`,
  `.to_json()`: each plan with its `"sla"` list); `NoStatement` when one of the plans has not
  started in the period.
- `period_of(epoch, tz)`, `period_bounds(period, tz)`.

Decisions (where the spec leaves room)
--------------------------------------
1. Versions: the version for a call is the latest with effective_from <= the call's
   offered_at date in the plan's time zone. A file without effective_from is in force since
   the beginning of time; otherwise the plan starts on its first version's effective_from. A
   call offered before that is not rated (no amount, none of the allowance, on no statement
   and not in the SLA's measure), even if it ends later; a period that ends before it has no
   statement. Two versions of one plan with the same effective_from (or both without) are
   refused, naming both files; so are versions that differ in currency or time zone.
2. Periods: a call belongs to the calendar month (plan's time zone) holding its ended_at.
3. A period that spans two versions: each version's calls are rated separately, in call
   order, with that version's own allowance and tiers. The statement then shows each
   version's usage lines, named "<charge> (<plan>@<effective_from>)". Period fees and the SLA
   come from the version in force on the period's first day (the first version in the month
   the plan starts); a once fee is charged when the version in force on its `on` date lists
   an equal fee (so a fee copied into a later version is not charged twice). A once fee that
   no period can bill (dated before the plan, or governed by a version that does not list it)
   is not refused: it is named in `PlanSeries.warnings`.
4. Time metrics: seconds are the record's whole milliseconds. Zero seconds (or a call the bot
   never answered) count 0 even when min_seconds = 0. Defaults: min_seconds 0, first_block 0,
   block 1 (bill whole seconds); unit 1; included 0; model per_unit; precision "0.0001".
   min_seconds/first_block/block are refused on non-time metrics.
5. Tiers: `up_to` is inclusive and counts priced units after the allowance; the last tier
   must have no `up_to`. `volume` prices all units at the tier holding the running total, so
   a call that moves the total into a cheaper tier can have a negative amount.
6. `package`: a started package is billed whole (packages = ceil(billed / package_size)).
7. Money (price, amount, SLA fee, precision) must be a quoted decimal string: a TOML float
   *or integer* is refused. unit, included, up_to, package_size may be TOML integers or
   decimal strings, never floats. SLA ratios/seconds are not money and may be TOML floats.
   Charge names are unique within a plan (they name the per-call lines). Every number of a
   plan file fits in 12 digits before the decimal point and 6 after it (so precision is at
   most "0.000001"); an exponent is allowed within those bounds ("1.5e3" is 1500).
8. SLA: an [sla] table holds the answer-rate clause (answer_rate, max_ring_seconds and
   credit_percent, all three; ignore_abandoned_under optional), the satisfaction clause
   (min_csat and csat_credit_percent, both; csat_min_responses optional) or both; a clause
   with some of its required keys but not all is refused naming the first missing key, and
   a table with no clause is refused (key `sla`). Its fee is billed whenever the table exists.
   Both clauses are measured over the same calls: the period's calls rated under the plan.
   a. Answer rate: ring times are the record's whole milliseconds; a counted call is
      answered when the bot answered it with ring_seconds <= max_ring_seconds; abandoned
      calls with ring_seconds < ignore_abandoned_under are not counted. Met when answered >=
      answer_rate * counted (exactly), or when nothing was counted (measured null).
   b. Satisfaction: min_csat is a quoted decimal string in [1, 5] (a TOML float or integer is
      refused, like money); csat_min_responses a TOML integer >= 1, default 1 (judged on any
      response: a minimum sample is a contract term, not ours to invent). Responses are the
      calls with a csat, whatever their outcome; each score is mapped onto 1..5 as
      1 + (score - 1) * 4 / (scale - 1) and averaged as exact Fractions (Csat.on_five()'s
      28-digit Decimals could tip a mean that equals min_csat below it). Not judged (met
      None, no credit) with fewer than csat_min_responses responses (always with none); else
      met when mean >= min_csat exactly. A csat outside 1..scale, or a scale outside 2..10,
      is a RatingError naming the call.
   c. Each missed clause credits its own percent (credit_percent, csat_credit_percent) of the
      period's usage amount, each rounded half-up to the plan's precision, as a negative
      `sla_credit` line: answer rate first, then satisfaction; both can be missed. The line's
      name carries the measure (the rate in percent, the mean, both truncated to 2 places so
      a miss never reads as a tie); its JSON adds clause, measured, target and sample. A met
      or not judged clause gives no line: `lines` stay billing lines. Every clause is in
      `Statement.sla_clauses` and the statement JSON's `"sla"` list: {clause, measured,
      target, sample, met}, measured and target as decimal strings (as on the credit line;
      measured exact up to 6 places, else half-up to 6; null when nothing was measured),
      sample the counted calls or the responses, met true/false/null (not judged).
9. Statement quantities are priced units (e.g. minutes): exact when they fit in 6 decimal
   places, else rounded half-up to 6. Line amounts keep their own precision; only the total
   is rounded, half-up to the currency's minor unit.
10. Per-call lines (`ChargeLine`) carry the call's metered quantity in the metric's own unit
   (e.g. 66 seconds after blocks) and its marginal amount at the plan's precision.
11. Module quantities must be non-negative multiples of 10**-6 (RatingError otherwise).
12. Incremental rating: `Rater.rate` requires each call to come after the last rated call of
   its (period, version) in (ended_at, call_id) order, and the period to have been opened by
   `rerate` (after a restart nothing is known about a period's earlier calls). A call that is
   already rated and changes (e.g. a corrected end) must be handled with `rerate` too: the
   Rater keeps no per-call memory. A single PlanVersion passed to rate_calls, Rater,
   build_statement or compare_plans is a plan of one version (its effective_from applies).
13. Comparing plans: volume k scales every charge's period quantity by k with fees fixed; the
   answer rate and the mean score stay as measured (the mix scales), so the answer-rate
   verdict is kept, and the satisfaction clause has k times the responses: judged (missed
   when its mean is below min_csat) once k * responses >= csat_min_responses. Each missed
   clause credits its percent of the scaled usage; the break-even is the smallest k in [0.01, 100] where two plans
   cost the same or swap order (log grid of 400 points, then bisection), else None.
14. PlanError keys count arrays of tables from 1: `charge[1]` is the first [[charge]].
"""

from __future__ import annotations

from .book import PlanBook, PlanSeries, UnknownPlan
from .compare import BreakEven, Comparison, PlanCost, compare_plans
from .compiled import CallCharge, ChargeLine
from .engine import PeriodState, rate_calls, rate_period
from .errors import NoStatement, NotRated, PlanError, RatingError, RerateNeeded
from .loader import load_plan, parse_plan
from .periods import period_bounds, period_of
from .plan import Charge, Fee, PlanVersion, Sla, Tier
from .rater import Rater
from .sla import CsatMeasure, SlaMeasure, measure_csat, measure_sla
from .statement import SlaClause, Statement, StatementLine, build_statement

__all__ = [
    "BreakEven", "CallCharge", "Charge", "ChargeLine", "Comparison", "CsatMeasure", "Fee",
    "NoStatement", "NotRated", "PeriodState", "PlanBook", "PlanCost", "PlanError", "PlanSeries",
    "PlanVersion", "Rater", "RatingError", "RerateNeeded", "Sla", "SlaClause", "SlaMeasure",
    "Statement", "StatementLine", "Tier", "UnknownPlan", "build_statement", "compare_plans",
    "load_plan", "measure_csat", "measure_sla", "parse_plan", "period_bounds", "period_of",
    "rate_calls", "rate_period",
]
