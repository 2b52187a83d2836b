//! Planning a `RoutedAlias`: its schedule, the time now and the series as observed →
//! which collections to create, which to retire, where the alias should point, what the
//! status says and when to look again. Pure: the caller passes `now` (the controller its
//! clock, `up` the wall clock, tests a fixed instant), so every rule here is tested
//! without waiting.
//!
//! The series. Interval `k` (k ≥ 0) runs from `start + k·interval` to
//! `start + (k+1)·interval`, computed in the spec's time zone: `s`, `m` and `h` are exact
//! durations, `d`, `w` and `M` calendar units, so `1d` in `Europe/Berlin` is local
//! midnight to local midnight, 23 hours in March and 25 in October. Each interval's
//! collection is named after its start in UTC: `<alias>_20261122T000000Z`.
//!
//! The rules, in the order they apply:
//! 1. The live window ends at the newest interval that has begun `preemptiveCreate` from
//!    now, and starts at the oldest live collection (or the current interval when there is
//!    none: a new series is not back-filled to `start`). Missing collections inside it are
//!    created, newest first, except those already past `autoDeleteAge` (an outage longer
//!    than the retention does not bring back data nobody will keep).
//! 2. No more than `maxCollections` live collections: what would exceed it is not created
//!    and the verdict is `LimitReached`.
//! 3. The alias moves to the newest collection whose interval has begun and that is
//!    Ready, never backwards; after an outage that is one move, straight to the newest.
//! 4. A collection whose whole interval ended `autoDeleteAge` ago is retired, but never
//!    the current or next one and never one the alias points to (or is about to).
//! 5. The next action is the earliest of: the next preemptive create, the next interval
//!    start (the alias move), the next retirement. The controller requeues for exactly it.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, Zoned};

use crate::crd::routed::{RoutedAlias, RoutedAliasSpec};
use crate::crd::{Collection, PAUSED_ANNOTATION};

/// Format of the interval start in collection names (UTC).
pub const STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Why a spec cannot be scheduled (the API server's schema catches the shape; these are
/// the rules it cannot express: unknown time zones, dates that do not exist).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `timeZone` is not in the tz database.
    #[error("timeZone {0:?} is not a known IANA time zone (e.g. UTC, Europe/Berlin)")]
    TimeZone(String),
    /// `start` does not parse or does not exist in the time zone.
    #[error("start {0:?}: {1}")]
    Start(String, String),
    /// `interval` does not parse.
    #[error("interval {0:?} is not a count and a unit (s, m, h, d, w, M), e.g. 1d")]
    Interval(String),
    /// A duration field does not parse.
    #[error("{field} {value:?} is not a count and a unit (s, m, h, d, w), e.g. 2h")]
    Duration {
        /// `preemptiveCreate` or `autoDeleteAge`.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// `maxCollections` below 1.
    #[error("maxCollections must be at least 1")]
    MaxCollections,
}

/// The unit of an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds (exact).
    Second,
    /// Minutes (exact).
    Minute,
    /// Hours (exact: an hour-long interval is an hour long across a DST change).
    Hour,
    /// Calendar days in the time zone.
    Day,
    /// Calendar weeks (7 calendar days).
    Week,
    /// Calendar months (the day of month of `start`, clamped to the month's length).
    Month,
}

/// An interval length: `count` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// How many.
    pub count: i64,
    /// Of what.
    pub unit: Unit,
}

impl std::str::FromStr for Interval {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::Interval(text.to_string());
        let split = text.len().checked_sub(1).ok_or_else(bad)?;
        let (digits, unit) = text.split_at(split);
        let count: i64 = digits.parse().map_err(|_| bad())?;
        let unit = match unit {
            "s" => Unit::Second,
            "m" => Unit::Minute,
            "h" => Unit::Hour,
            "d" => Unit::Day,
            "w" => Unit::Week,
            "M" => Unit::Month,
            _ => return Err(bad()),
        };
        if !(1..=1_000_000).contains(&count) {
            return Err(bad());
        }
        Ok(Self { count, unit })
    }
}

impl Interval {
    /// Roughly how long one interval lasts, to find the interval of an instant quickly.
    fn approximate_seconds(&self) -> i64 {
        let unit = match self.unit {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month => 2_629_746,
        };
        unit * self.count
    }
}

/// Parses a fixed duration: a count and `s`, `m`, `h`, `d` (24 h) or `w` (7 × 24 h).
/// Ages and lead times are plain durations, unlike intervals: "30 days of retention" is
/// meant as an amount of time, not as a calendar position.
pub fn parse_duration(field: &'static str, text: &str) -> Result<SignedDuration, ScheduleError> {
    let bad = || ScheduleError::Duration {
        field,
        value: text.to_string(),
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let count: i64 = digits.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if !(0..=10_000_000).contains(&count) {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(count * seconds))
}

/// A parsed, validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Zoned,
    interval: Interval,
    /// Lead time of creation.
    pub preemptive: SignedDuration,
    /// Retention after an interval ends (`None`: keep forever).
    pub auto_delete_age: Option<SignedDuration>,
    /// Cap on live collections.
    pub max_collections: usize,
}

impl Schedule {
    /// Parses a spec; the error says which field is wrong and why.
    pub fn from_spec(spec: &RoutedAliasSpec) -> Result<Self, ScheduleError> {
        let zone = TimeZone::get(&spec.time_zone)
            .map_err(|_| ScheduleError::TimeZone(spec.time_zone.clone()))?;
        let start = parse_start(&spec.start, &zone)?;
        let interval: Interval = spec.interval.parse()?;
        let preemptive = match &spec.preemptive_create {
            Some(text) => parse_duration("preemptiveCreate", text)?,
            None => SignedDuration::ZERO,
        };
        let auto_delete_age = spec
            .auto_delete_age
            .as_deref()
            .map(|text| parse_duration("autoDeleteAge", text))
            .transpose()?;
        let max_collections =
            usize::try_from(spec.max_collections).map_err(|_| ScheduleError::MaxCollections)?;
        if max_collections == 0 {
            return Err(ScheduleError::MaxCollections);
        }
        Ok(Self {
            start,
            interval,
            preemptive,
            auto_delete_age,
            max_collections,
        })
    }

    /// The start of interval `k` (`None` when `k` is negative or beyond the calendar).
    pub fn boundary(&self, k: i64) -> Option<Timestamp> {
        if k < 0 {
            return None;
        }
        let n = k.checked_mul(self.interval.count)?;
        let fixed = |unit_seconds: i64| {
            let offset = SignedDuration::from_secs(n.checked_mul(unit_seconds)?);
            self.start.timestamp().checked_add(offset).ok()
        };
        match self.interval.unit {
            Unit::Second => fixed(1),
            Unit::Minute => fixed(60),
            Unit::Hour => fixed(3_600),
            // Calendar arithmetic from `start` every time (not step by step), so a month
            // clamped to the 28th does not drag the following months to the 28th too.
            Unit::Day => self.calendar(Span::new().try_days(n).ok()?),
            Unit::Week => self.calendar(Span::new().try_weeks(n).ok()?),
            Unit::Month => self.calendar(Span::new().try_months(n).ok()?),
        }
    }

    fn calendar(&self, span: Span) -> Option<Timestamp> {
        self.start.checked_add(span).ok().map(|z| z.timestamp())
    }

    /// The interval containing `t`: the largest `k` with `boundary(k) <= t`; `None`
    /// before the series starts.
    pub fn index_at(&self, t: Timestamp) -> Option<i64> {
        let first = self.start.timestamp();
        if t < first {
            return None;
        }
        let elapsed = t.as_second().saturating_sub(first.as_second());
        let mut k = elapsed / self.interval.approximate_seconds();
        // The estimate is off by DST hours or month lengths: a step or two at most.
        while k > 0 && self.boundary(k).is_none_or(|b| b > t) {
            k -= 1;
        }
        while self.boundary(k + 1).is_some_and(|b| b <= t) {
            k += 1;
        }
        Some(k)
    }

    /// The `k` whose interval starts exactly at `t`, if any (a member's identity).
    pub fn index_of(&self, t: Timestamp) -> Option<i64> {
        let k = self.index_at(t)?;
        (self.boundary(k) == Some(t)).then_some(k)
    }
}

fn parse_start(text: &str, zone: &TimeZone) -> Result<Zoned, ScheduleError> {
    let bad = |why: String| ScheduleError::Start(text.to_string(), why);
    // With an offset or `Z`: an instant. Without: a local time in the zone (a time in a
    // DST gap moves forward, one in a fold takes the earlier instant: jiff's
    // "compatible" rule, RFC 5545's).
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Ok(instant.to_zoned(zone.clone()));
    }
    if let Ok(local) = text.parse::<DateTime>() {
        return local
            .to_zoned(zone.clone())
            .map_err(|error| bad(error.to_string()));
    }
    match text.parse::<Date>() {
        Ok(date) => date
            .to_zoned(zone.clone())
            .map_err(|error| bad(error.to_string())),
        Err(error) => Err(bad(format!(
            "not an RFC 3339 time, a local date-time or a date ({error})"
        ))),
    }
}

/// `<alias>_<UTC start>`: the engine name of the collection starting at `start`.
pub fn collection_name(alias: &str, start: Timestamp) -> String {
    format!("{alias}_{}", stamp(start))
}

/// The UTC start as used in names: `20261122T000000Z`.
pub fn stamp(start: Timestamp) -> String {
    start.strftime(STAMP_FORMAT).to_string()
}

/// The interval start encoded in a collection name of this alias's series, if it is one.
pub fn start_of(alias: &str, collection: &str) -> Option<Timestamp> {
    let rest = collection.strip_prefix(alias)?.strip_prefix('_')?;
    let digits = rest.strip_suffix('Z')?;
    if rest.len() != 16 {
        return None;
    }
    let local = DateTime::strptime("%Y%m%dT%H%M%S", digits).ok()?;
    local.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// One collection of the series as observed (a generated `Collection` resource, or for
/// `plan`, an engine collection with a series name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The generated resource's name.
    pub resource: String,
    /// Engine collection name.
    pub collection: String,
    /// Its interval start.
    pub start: Timestamp,
    /// Its `Collection` is Ready (exists in the engine, owned).
    pub ready: bool,
    /// Its `Collection` is being deleted already.
    pub deleting: bool,
}

/// What the planner sees of the series besides the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutedObserved {
    /// The generated collections.
    pub members: Vec<Member>,
    /// The collection the engine alias points to now (the generated `CollectionAlias`'s
    /// bound target).
    pub alias_bound: Option<String>,
    /// The target the generated `CollectionAlias` asks for now (its `spec.collection`).
    pub alias_desired: Option<String>,
}

/// Why a `RoutedAlias` is not Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutedReason {
    /// The spec cannot be scheduled (unknown time zone, bad start…).
    InvalidSpec,
    /// `maxCollections` stops creation.
    LimitReached,
    /// The alias does not point to the current interval's collection yet (it is being
    /// created or is not Ready, or the series has not begun).
    WaitingForCollection,
    /// A `CollectionAlias` of the same name exists and this series does not own it.
    Conflict,
    /// `collections.dev/paused` is set.
    Paused,
}

impl RoutedReason {
    /// The condition reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            RoutedReason::InvalidSpec => "InvalidSpec",
            RoutedReason::LimitReached => "LimitReached",
            RoutedReason::WaitingForCollection => "WaitingForCollection",
            RoutedReason::Conflict => "Conflict",
            RoutedReason::Paused => "Paused",
        }
    }
}

/// The planner's verdict on the series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutedVerdict {
    /// The alias serves the current interval's collection.
    Ready {
        /// What it serves.
        message: String,
    },
    /// Not Ready, and why.
    NotReady {
        /// Reason.
        reason: RoutedReason,
        /// Human-readable message.
        message: String,
    },
}

/// Kinds of scheduled action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NextKind {
    /// Create the next collection (`preemptiveCreate` before its interval).
    Create,
    /// Move the alias (an interval begins).
    SwitchAlias,
    /// Retire a collection.
    Retire,
}

impl NextKind {
    /// The status string.
    pub fn as_str(self) -> &'static str {
        match self {
            NextKind::Create => "Create",
            NextKind::SwitchAlias => "SwitchAlias",
            NextKind::Retire => "Retire",
        }
    }
}

/// The next scheduled action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextAction {
    /// What.
    pub kind: NextKind,
    /// On which collection.
    pub collection: String,
    /// When.
    pub at: Timestamp,
}

/// Where a collection stands, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Its interval ended.
    Past,
    /// Its interval is now.
    Current,
    /// Its interval has not begun.
    Next,
    /// It is being retired.
    Retiring,
}

impl Position {
    /// The status string.
    pub fn as_str(self) -> &'static str {
        match self {
            Position::Past => "Past",
            Position::Current => "Current",
            Position::Next => "Next",
            Position::Retiring => "Retiring",
        }
    }
}

/// One row of the series, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesEntry {
    /// Engine collection name.
    pub collection: String,
    /// Generated resource name.
    pub resource: String,
    /// Interval start.
    pub start: Timestamp,
    /// Interval end.
    pub end: Timestamp,
    /// Time position.
    pub position: Position,
    /// Its `Collection` is Ready.
    pub ready: bool,
}

/// What to do for one `RoutedAlias`.
#[derive(Debug, Clone)]
pub struct RoutedPlan {
    /// Collections to create, from the *current* template (existing ones keep theirs).
    pub create: Vec<Collection>,
    /// What the generated alias should point to (`None`: no alias yet, or leave it).
    pub alias_target: Option<String>,
    /// Members to retire (delete their `Collection` resources).
    pub retire: Vec<Member>,
    /// The series after this plan, oldest first.
    pub series: Vec<SeriesEntry>,
    /// The next scheduled action.
    pub next: Option<NextAction>,
    /// The verdict.
    pub verdict: RoutedVerdict,
}

impl RoutedPlan {
    fn nothing(verdict: RoutedVerdict, observed: &RoutedObserved) -> Self {
        Self {
            create: Vec::new(),
            alias_target: observed.alias_desired.clone(),
            retire: Vec::new(),
            series: Vec::new(),
            next: None,
            verdict,
        }
    }

    /// How long from `now` until the next action (zero if it is due).
    pub fn wait(&self, now: Timestamp) -> Option<std::time::Duration> {
        self.next.as_ref().map(|next| {
            let wait = now.duration_until(next.at);
            std::time::Duration::try_from(wait).unwrap_or_default()
        })
    }
}

/// Plans one `RoutedAlias` at `now`; see the module documentation for the rules.
pub fn plan_routed(routed: &RoutedAlias, now: Timestamp, observed: &RoutedObserved) -> RoutedPlan {
    let schedule = match Schedule::from_spec(&routed.spec) {
        Ok(schedule) => schedule,
        Err(error) => {
            return RoutedPlan::nothing(
                RoutedVerdict::NotReady {
                    reason: RoutedReason::InvalidSpec,
                    message: error.to_string(),
                },
                observed,
            );
        }
    };
    let paused = routed
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSED_ANNOTATION))
        .is_some_and(|v| v == "true");
    if paused {
        return RoutedPlan::nothing(
            RoutedVerdict::NotReady {
                reason: RoutedReason::Paused,
                message: format!(
                    "{PAUSED_ANNOTATION} is \"true\": no collection is created or retired and \
                     the alias is not moved"
                ),
            },
            observed,
        );
    }
    plan_schedule(routed, &schedule, now, observed)
}

fn plan_schedule(
    routed: &RoutedAlias,
    schedule: &Schedule,
    now: Timestamp,
    observed: &RoutedObserved,
) -> RoutedPlan {
    let alias = routed.engine_name();
    let current = schedule.index_at(now);
    let end_of = |k: i64| schedule.boundary(k + 1).unwrap_or(Timestamp::MAX);
    let expired = |k: i64| match schedule.auto_delete_age {
        Some(age) => end_of(k)
            .checked_add(age)
            .is_ok_and(|retire_at| retire_at <= now),
        None => false,
    };
    let is_current_or_next = |k: i64| current.is_none_or(|c| k >= c);

    // Members by interval; members not on a boundary (a hand-made resource) are shown but
    // never counted as an interval's collection.
    let mut live: Vec<(i64, &Member)> = observed
        .members
        .iter()
        .filter(|m| !m.deleting)
        .filter_map(|m| schedule.index_of(m.start).map(|k| (k, m)))
        .collect();
    live.sort_by_key(|(k, _)| *k);
    let index_of_collection = |name: &str| {
        live.iter()
            .find(|(_, m)| m.collection == name)
            .map(|(k, _)| *k)
    };
    let protected: Vec<&str> = [&observed.alias_bound, &observed.alias_desired]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();

    // Rule 4: retirements.
    let mut retire: Vec<Member> = Vec::new();
    let mut retire_blocked: Vec<&str> = Vec::new();
    for (k, member) in &live {
        if !expired(*k) || is_current_or_next(*k) {
            continue;
        }
        if protected.contains(&member.collection.as_str()) {
            retire_blocked.push(&member.collection);
        } else {
            retire.push((*member).clone());
        }
    }
    let staying: Vec<(i64, &Member)> = live
        .iter()
        .filter(|(_, m)| !retire.iter().any(|r| r.collection == m.collection))
        .copied()
        .collect();

    // Rule 1 and 2: creations. Under the cap the current interval comes first, then the
    // next ones, then missing past ones newest first.
    let newest = now
        .checked_add(schedule.preemptive)
        .ok()
        .and_then(|t| schedule.index_at(t));
    let mut create_ks: Vec<i64> = Vec::new();
    let mut capped: Vec<i64> = Vec::new();
    if let Some(newest) = newest {
        let origin = staying
            .first()
            .map(|(k, _)| *k)
            .or(current)
            .unwrap_or(0)
            .min(newest);
        let taken: std::collections::HashSet<i64> = observed
            .members
            .iter()
            .filter_map(|m| schedule.index_of(m.start))
            .collect();
        let room = schedule.max_collections.saturating_sub(staying.len());
        let ahead = usize::try_from(newest - current.unwrap_or(0)).unwrap_or(0);
        // Enough candidates to fill the room in priority order and to see one more.
        let enough = room.saturating_add(ahead).saturating_add(2);
        let mut candidates: Vec<i64> = Vec::new();
        let mut k = newest;
        while k >= origin && candidates.len() < enough {
            if expired(k) {
                // Every older interval ended earlier: expired too.
                break;
            }
            if !taken.contains(&k) {
                candidates.push(k);
            }
            k -= 1;
        }
        let now_k = current.unwrap_or(-1);
        candidates.sort_by_key(|k| match (*k).cmp(&now_k) {
            std::cmp::Ordering::Equal => (0, 0),
            std::cmp::Ordering::Greater => (1, *k),
            std::cmp::Ordering::Less => (2, -*k),
        });
        for k in candidates {
            if create_ks.len() < room {
                create_ks.push(k);
            } else {
                capped.push(k);
            }
        }
    }
    create_ks.sort_unstable();
    let template = &routed.spec.template;
    let create: Vec<Collection> = create_ks
        .iter()
        .filter_map(|k| {
            let start = schedule.boundary(*k)?;
            let name = collection_name(&alias, start);
            Some(routed.member_collection(
                template,
                &name,
                &stamp(start),
                &start.to_string(),
                &end_of(*k).to_string(),
            ))
        })
        .collect();

    // Rule 3: the alias target.
    let bound_k = observed
        .alias_bound
        .as_deref()
        .and_then(index_of_collection);
    let best_ready = current.and_then(|c| {
        staying
            .iter()
            .rev()
            .find(|(k, m)| *k <= c && m.ready)
            .map(|(k, m)| (*k, m.collection.clone()))
    });
    let alias_target = match best_ready {
        Some((k, name)) if bound_k.is_none_or(|b| k >= b) => Some(name),
        _ => observed
            .alias_desired
            .clone()
            .or_else(|| observed.alias_bound.clone()),
    };

    // Status rows: the staying members, the retiring ones and the ones being created.
    let position = |k: i64| match current {
        Some(c) if k < c => Position::Past,
        Some(c) if k == c => Position::Current,
        _ => Position::Next,
    };
    let mut series: Vec<SeriesEntry> = Vec::new();
    for (k, member) in &live {
        let retiring = retire.iter().any(|r| r.collection == member.collection);
        series.push(SeriesEntry {
            collection: member.collection.clone(),
            resource: member.resource.clone(),
            start: member.start,
            end: end_of(*k),
            position: if retiring {
                Position::Retiring
            } else {
                position(*k)
            },
            ready: member.ready,
        });
    }
    for member in observed.members.iter().filter(|m| m.deleting) {
        series.push(SeriesEntry {
            collection: member.collection.clone(),
            resource: member.resource.clone(),
            start: member.start,
            end: schedule
                .index_of(member.start)
                .map(end_of)
                .unwrap_or(member.start),
            position: Position::Retiring,
            ready: member.ready,
        });
    }
    for (k, collection) in create_ks.iter().zip(&create) {
        series.push(SeriesEntry {
            collection: collection.engine_name(),
            resource: collection.metadata.name.clone().unwrap_or_default(),
            start: schedule.boundary(*k).unwrap_or(Timestamp::MIN),
            end: end_of(*k),
            position: position(*k),
            ready: false,
        });
    }
    series.sort_by(|a, b| (a.start, &a.collection).cmp(&(b.start, &b.collection)));

    // Rule 5: the next action.
    let mut next: Vec<NextAction> = Vec::new();
    let upcoming = newest.map_or(0, |n| n + 1);
    if let Some(start) = schedule.boundary(upcoming)
        && let Ok(at) = start.checked_sub(schedule.preemptive)
    {
        next.push(NextAction {
            kind: NextKind::Create,
            collection: collection_name(&alias, start),
            at: at.max(now),
        });
    }
    let switch_k = current.map_or(0, |c| c + 1);
    if let Some(at) = schedule.boundary(switch_k) {
        next.push(NextAction {
            kind: NextKind::SwitchAlias,
            collection: collection_name(&alias, at),
            at,
        });
    }
    if let Some(age) = schedule.auto_delete_age {
        for (k, member) in &staying {
            if let Ok(at) = end_of(*k).checked_add(age)
                && at > now
            {
                next.push(NextAction {
                    kind: NextKind::Retire,
                    collection: member.collection.clone(),
                    at,
                });
            }
        }
    }
    let next = next
        .into_iter()
        .min_by(|a, b| (a.at, a.kind).cmp(&(b.at, b.kind)));

    // The verdict.
    let current_name = current
        .and_then(|c| schedule.boundary(c))
        .map(|start| collection_name(&alias, start));
    let verdict = if let Some(k) = capped.first() {
        let name = schedule
            .boundary(*k)
            .map(|start| collection_name(&alias, start))
            .unwrap_or_default();
        RoutedVerdict::NotReady {
            reason: RoutedReason::LimitReached,
            message: format!(
                "maxCollections {} reached ({} live collections): not creating {name}{}; \
                 raise maxCollections or shorten autoDeleteAge",
                schedule.max_collections,
                staying.len() + create_ks.len(),
                if capped.len() > 1 {
                    " and other missing intervals"
                } else {
                    ""
                },
            ),
        }
    } else {
        match (&current_name, &observed.alias_bound) {
            (None, _) => RoutedVerdict::NotReady {
                reason: RoutedReason::WaitingForCollection,
                message: format!(
                    "the series begins at {}",
                    schedule.boundary(0).unwrap_or(Timestamp::MIN)
                ),
            },
            (Some(current), Some(bound)) if bound == current => RoutedVerdict::Ready {
                message: format!("alias {alias} points to {current}, the current interval"),
            },
            (Some(current), bound) => {
                let mut message = format!(
                    "waiting for {current} (the current interval) to be Ready before the alias \
                     moves to it"
                );
                match bound {
                    Some(bound) => message.push_str(&format!("; alias {alias} points to {bound}")),
                    None => message.push_str(&format!("; alias {alias} does not exist yet")),
                }
                RoutedVerdict::NotReady {
                    reason: RoutedReason::WaitingForCollection,
                    message,
                }
            }
        }
    };
    if !retire_blocked.is_empty() {
        tracing::debug!(
            alias,
            blocked = ?retire_blocked,
            "retirement waits: the alias points to these collections"
        );
    }

    RoutedPlan {
        create,
        alias_target,
        retire,
        series,
        next,
        verdict,
    }
}

#[cfg(test)]
#[path = "routed_tests.rs"]
mod tests;
