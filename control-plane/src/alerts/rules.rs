//! The alert rules, without I/O: each takes the thresholds and what is known
//! about one unit (a [`UnitSnapshot`]) and says whether its condition holds.
//! The engine gathers snapshots and acts on the verdicts ([`decide`]).

use chrono::{Duration, NaiveDateTime};

use crate::config::AlertThresholds;

/// Which rule an alert type runs, from its `name` (case-insensitive;
/// `-`, `_` and spaces are the same): `tamper`, `no_connection`,
/// `low_battery`, `over_temperature`, `credit_expiring`, `credit_exhausted`,
/// `dead_letters`, `failed_mt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// A tamper trip reported while the tamper switch is enabled.
    Tamper,
    /// Nothing heard from the unit for longer than expected.
    NoConnection,
    /// Low state of charge or battery voltage over the telemetry window.
    LowBattery,
    /// Temperature above the threshold repeatedly in the window.
    OverTemperature,
    /// DCM credit runs out soon.
    CreditExpiring,
    /// DCM credit has run out.
    CreditExhausted,
    /// Repeated dead letters from the unit.
    DeadLetters,
    /// Repeated failed MT deliveries to the unit.
    FailedMt,
}

impl RuleKind {
    /// Every rule, for listings and tests.
    pub const ALL: [Self; 8] = [
        Self::Tamper,
        Self::NoConnection,
        Self::LowBattery,
        Self::OverTemperature,
        Self::CreditExpiring,
        Self::CreditExhausted,
        Self::DeadLetters,
        Self::FailedMt,
    ];

    /// The canonical name (what an `alert_type.name` says).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tamper => "tamper",
            Self::NoConnection => "no_connection",
            Self::LowBattery => "low_battery",
            Self::OverTemperature => "over_temperature",
            Self::CreditExpiring => "credit_expiring",
            Self::CreditExhausted => "credit_exhausted",
            Self::DeadLetters => "dead_letters",
            Self::FailedMt => "failed_mt",
        }
    }

    /// The rule an alert type name selects, if any (see [`canonical`]).
    pub fn from_name(name: &str) -> Option<Self> {
        let canonical = canonical(name);
        Self::ALL.into_iter().find(|k| k.as_str() == canonical)
    }

    /// Whether the rule reads the unit's telemetry window.
    pub const fn needs_telemetry(self) -> bool {
        matches!(
            self,
            Self::Tamper | Self::LowBattery | Self::OverTemperature
        )
    }
}

/// An alert type's name or status as the engine compares it: trimmed,
/// lower case, with `-` and spaces as `_` (" Auto Clear" is "auto_clear").
pub fn canonical(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Telemetry fields the rules read.
pub const STATE_OF_CHARGE: &str = "state_of_charge_percent";
pub const VOLTAGE: &str = "voltage";
pub const TEMPERATURE: &str = "temperature";
/// 1 when a status report said the tamper switch is tripped (written by the
/// MO sink; units may also send it in telemetry).
pub const TAMPER_TRIGGERED: &str = "tamper_triggered";
/// The fields of one telemetry read, in this order.
pub const TELEMETRY_FIELDS: [&str; 4] = [STATE_OF_CHARGE, VOLTAGE, TEMPERATURE, TAMPER_TRIGGERED];

/// A mean over the samples that had a value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Mean {
    pub samples: u32,
    pub sum: f64,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.samples += 1;
        self.sum += v;
    }

    /// The mean, if there were samples.
    pub fn value(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.sum / f64::from(self.samples))
    }
}

/// What the rules need from a unit's telemetry window, aggregated in one scan.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TelemetryStats {
    pub state_of_charge: Mean,
    pub voltage: Mean,
    /// Samples with a temperature.
    pub temperature_samples: u32,
    /// Samples above `over_temperature_celsius`.
    pub over_temperature: u32,
    pub max_temperature: Option<f64>,
    /// Samples with `tamper_triggered` non-zero.
    pub tamper_trips: u32,
}

impl TelemetryStats {
    /// Aggregates the window's columns (each as long as the window's rows;
    /// `None` where the field has no value at that time).
    pub fn aggregate(
        state_of_charge: impl IntoIterator<Item = Option<f64>>,
        voltage: impl IntoIterator<Item = Option<f64>>,
        temperature: impl IntoIterator<Item = Option<f64>>,
        tamper: impl IntoIterator<Item = Option<f64>>,
        t: &AlertThresholds,
    ) -> Self {
        let mut s = Self::default();
        for v in state_of_charge.into_iter().flatten() {
            s.state_of_charge.add(v);
        }
        for v in voltage.into_iter().flatten() {
            s.voltage.add(v);
        }
        for v in temperature.into_iter().flatten() {
            s.temperature_samples += 1;
            if v > t.over_temperature_celsius {
                s.over_temperature += 1;
            }
            s.max_temperature = Some(s.max_temperature.map_or(v, |m: f64| m.max(v)));
        }
        s.tamper_trips = tamper.into_iter().flatten().filter(|v| *v != 0.0).count() as u32;
        s
    }
}

/// A DCM unit's latest balance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Credit {
    /// Seconds of credit the unit reported.
    pub balance: i64,
    /// When that credit runs out.
    pub expected_expiry: NaiveDateTime,
}

/// What is known about one unit at analysis time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnitSnapshot {
    /// `product.current_tamper_flag`: the tamper switch is enabled.
    pub tamper_switch_enabled: bool,
    /// The last time the unit was heard from (status report, connection,
    /// message); `None` if never.
    pub last_seen: Option<NaiveDateTime>,
    /// Whether the unit is connected right now (its latest RTC connection
    /// record is `online`).
    pub online: bool,
    /// `product.dcm_enabled_flag`.
    pub dcm_enabled: bool,
    /// The latest balance of a DCM unit.
    pub credit: Option<Credit>,
    /// The telemetry window.
    pub telemetry: TelemetryStats,
    /// Dead letters from the unit in the dead-letter window.
    pub dead_letters: u32,
    /// Failed MT deliveries to the unit in the failed-MT window.
    pub failed_mts: u32,
}

/// What a rule says about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The condition holds; the text says what triggered it (`extra_info`).
    Raise(String),
    /// The condition does not hold.
    Clear,
    /// Not enough information to say either way (changes nothing).
    Quiet,
}

/// Runs one rule on one unit at `now`.
pub fn evaluate(
    kind: RuleKind,
    t: &AlertThresholds,
    u: &UnitSnapshot,
    now: NaiveDateTime,
) -> Verdict {
    let tel = &u.telemetry;
    let enough = |n: u32| n >= t.min_samples.max(1);
    match kind {
        RuleKind::Tamper => match (u.tamper_switch_enabled, tel.tamper_trips) {
            (true, n) if n > 0 => Verdict::Raise(format!(
                "tamper switch tripped {n} time(s) in the last {} while enabled",
                span(t.telemetry_window_secs)
            )),
            _ => Verdict::Clear,
        },
        RuleKind::NoConnection => match u.last_seen {
            _ if u.online => Verdict::Clear,
            None => Verdict::Quiet,
            Some(seen) => {
                let silent = now - seen;
                if silent > Duration::seconds(t.no_connection_secs) {
                    Verdict::Raise(format!(
                        "no connection for {} (last heard from {})",
                        span(silent.num_seconds()),
                        crate::values::format_datetime(&seen)
                    ))
                } else {
                    Verdict::Clear
                }
            }
        },
        RuleKind::LowBattery => {
            let (soc, volts) = (tel.state_of_charge, tel.voltage);
            if !enough(soc.samples) && !enough(volts.samples) {
                return Verdict::Quiet;
            }
            let low_soc = soc
                .value()
                .filter(|m| enough(soc.samples) && *m < t.low_state_of_charge_percent);
            let low_volts = volts
                .value()
                .filter(|m| enough(volts.samples) && *m < t.low_battery_voltage);
            let window = span(t.telemetry_window_secs);
            match (low_soc, low_volts) {
                (Some(s), _) => Verdict::Raise(format!(
                    "mean state of charge {s:.1}% over the last {window} (threshold {}%, {} samples)",
                    t.low_state_of_charge_percent, soc.samples
                )),
                (None, Some(v)) => Verdict::Raise(format!(
                    "mean battery voltage {v:.2} V over the last {window} (threshold {} V, {} samples)",
                    t.low_battery_voltage, volts.samples
                )),
                (None, None) => Verdict::Clear,
            }
        }
        RuleKind::OverTemperature => {
            if !enough(tel.temperature_samples) {
                Verdict::Quiet
            } else if tel.over_temperature >= t.over_temperature_samples.max(1) {
                Verdict::Raise(format!(
                    "{} samples above {} °C in the last {} (max {:.1} °C)",
                    tel.over_temperature,
                    t.over_temperature_celsius,
                    span(t.telemetry_window_secs),
                    tel.max_temperature.unwrap_or_default()
                ))
            } else {
                Verdict::Clear
            }
        }
        RuleKind::CreditExpiring => match (u.dcm_enabled, u.credit) {
            (true, Some(c)) if c.balance > 0 && c.expected_expiry > now => {
                let left = c.expected_expiry - now;
                if left <= Duration::seconds(t.credit_expiring_within_secs) {
                    Verdict::Raise(format!(
                        "credit expires in {} (at {})",
                        span(left.num_seconds()),
                        crate::values::format_datetime(&c.expected_expiry)
                    ))
                } else {
                    Verdict::Clear
                }
            }
            // Exhausted credit is the other rule's alert.
            (true, Some(_)) | (false, _) => Verdict::Clear,
            (true, None) => Verdict::Quiet,
        },
        RuleKind::CreditExhausted => match (u.dcm_enabled, u.credit) {
            (true, Some(c)) if c.balance <= 0 || c.expected_expiry <= now => {
                Verdict::Raise(format!(
                    "credit exhausted (balance {} s, expected expiry {})",
                    c.balance,
                    crate::values::format_datetime(&c.expected_expiry)
                ))
            }
            (true, None) => Verdict::Quiet,
            _ => Verdict::Clear,
        },
        RuleKind::DeadLetters => count_rule(
            u.dead_letters,
            t.dead_letters,
            t.dead_letter_window_secs,
            "dead letters",
        ),
        RuleKind::FailedMt => count_rule(
            u.failed_mts,
            t.failed_mts,
            t.failed_mt_window_secs,
            "failed MT deliveries",
        ),
    }
}

fn count_rule(count: u32, threshold: u32, window_secs: i64, what: &str) -> Verdict {
    if count >= threshold.max(1) {
        Verdict::Raise(format!(
            "{count} {what} in the last {} (threshold {threshold})",
            span(window_secs)
        ))
    } else {
        Verdict::Clear
    }
}

/// A duration for people: `3d 4h`, `5h 12m`, `40m`, `12s`.
pub fn span(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// The state of one (unit, alert type) pair the engine acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertState {
    /// The open (undismissed) alert, if any.
    pub open_alert: Option<i64>,
    /// When the latest alert of the pair was dismissed, if ever.
    pub last_dismissed: Option<NaiveDateTime>,
}

/// What the engine does with a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a new alert with this `extra_info`.
    Raise(String),
    /// Dismiss the open alert (by the system: the condition cleared).
    Clear(i64),
    /// Nothing to change.
    Keep,
}

/// Turns a verdict into an action: at most one open alert per pair, none
/// within `cooling_off` of the last dismissal, and a system clear only if
/// the alert type clears automatically.
pub fn decide(
    verdict: Verdict,
    state: AlertState,
    cooling_off: Option<Duration>,
    clears_automatically: bool,
    now: NaiveDateTime,
) -> Action {
    match (verdict, state.open_alert) {
        (Verdict::Raise(_), Some(_)) => Action::Keep,
        (Verdict::Raise(info), None) => {
            let cooling = match (state.last_dismissed, cooling_off) {
                (Some(at), Some(period)) => now < at + period,
                _ => false,
            };
            if cooling {
                Action::Keep
            } else {
                Action::Raise(info)
            }
        }
        (Verdict::Clear, Some(id)) if clears_automatically => Action::Clear(id),
        _ => Action::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        crate::values::parse_datetime(s).unwrap()
    }

    #[test]
    fn names_select_rules() {
        for k in RuleKind::ALL {
            assert_eq!(RuleKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(
            RuleKind::from_name(" No-Connection "),
            Some(RuleKind::NoConnection)
        );
        assert_eq!(RuleKind::from_name("state-of-health"), None);
    }

    #[test]
    fn low_battery_needs_enough_samples() {
        let t = AlertThresholds::default();
        let few = vec![Some(5.0); 3];
        let stats = TelemetryStats::aggregate(few.clone(), vec![], vec![], vec![], &t);
        let u = UnitSnapshot {
            telemetry: stats,
            ..Default::default()
        };
        let now = at("2026-01-01T00:00:00");
        assert_eq!(evaluate(RuleKind::LowBattery, &t, &u, now), Verdict::Quiet);
        let many = vec![Some(5.0); 20];
        let u = UnitSnapshot {
            telemetry: TelemetryStats::aggregate(many, vec![], vec![], vec![], &t),
            ..Default::default()
        };
        assert!(matches!(
            evaluate(RuleKind::LowBattery, &t, &u, now),
            Verdict::Raise(_)
        ));
    }

    #[test]
    fn cooling_off_holds_a_raise_back_and_clear_needs_the_flag() {
        let now = at("2026-01-02T00:00:00");
        let dismissed = AlertState {
            open_alert: None,
            last_dismissed: Some(at("2026-01-01T12:00:00")),
        };
        let raise = || Verdict::Raise("x".into());
        assert_eq!(
            decide(raise(), dismissed, Some(Duration::days(1)), false, now),
            Action::Keep
        );
        assert_eq!(
            decide(raise(), dismissed, Some(Duration::hours(6)), false, now),
            Action::Raise("x".into())
        );
        let open = AlertState {
            open_alert: Some(7),
            last_dismissed: None,
        };
        assert_eq!(decide(raise(), open, None, true, now), Action::Keep);
        assert_eq!(decide(Verdict::Clear, open, None, false, now), Action::Keep);
        assert_eq!(
            decide(Verdict::Clear, open, None, true, now),
            Action::Clear(7)
        );
        assert_eq!(decide(Verdict::Quiet, open, None, true, now), Action::Keep);
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(span(12), "12s");
        assert_eq!(span(40 * 60), "40m");
        assert_eq!(span(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(span(3 * 86_400 + 4 * 3600), "3d 4h");
    }
}
