//! How a demo unit behaves, without I/O: a solar home system over a (compressed) day.
//!
//! The panel charges the battery by day along a half sine from 06:00 to 18:00; the
//! household draws a small base load and lights from 18:00 to 23:00; state of charge,
//! voltage, current and temperature follow. Credit (DCM) counts down in real seconds and
//! payments add to it. A few units misbehave on purpose so the default alert types have
//! something to find: a tripped tamper switch, a hot battery, a battery that never charges,
//! a unit that drops off the network now and then, and one whose credit has run out.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What is special about a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A well-behaved unit.
    Normal,
    /// Its tamper switch is tripped (alert: `tamper`).
    Tamper,
    /// Its battery runs hot (alert: `over_temperature`).
    Hot,
    /// Its panel is broken: the battery only discharges (alert: `low_battery`).
    FlatBattery,
    /// It goes offline now and then and comes back.
    Flaky,
    /// Its credit has run out until someone pays (alert: `credit_exhausted`).
    NoCredit,
}

impl Profile {
    /// The profile of the `index`th unit: one in ten units misbehaves, each way in turn, and
    /// the first five cover every way, so even a small demo shows every alert.
    pub const fn of(index: usize) -> Self {
        match index % 10 {
            0 => Self::Tamper,
            1 => Self::Hot,
            2 => Self::FlatBattery,
            3 => Self::Flaky,
            4 => Self::NoCredit,
            _ => Self::Normal,
        }
    }
}

/// Battery capacity (Wh) of a home system.
const CAPACITY_WH: f64 = 600.0;
/// Peak panel output (W).
const PEAK_SOLAR_W: f64 = 80.0;

/// One unit's state.
#[derive(Debug)]
pub struct Model {
    pub profile: Profile,
    /// Hours into the simulated day, 0..24.
    pub hour: f64,
    pub state_of_charge: f64,
    pub temperature: f64,
    pub solar_w: f64,
    pub load_w: f64,
    /// What the unit does: from the server's last status update.
    pub enabled: bool,
    pub tamper_enabled: bool,
    /// Seconds of credit left.
    pub balance: i64,
    /// Payments applied, by transaction id (a unit ignores duplicates).
    applied: Vec<String>,
    /// Telemetry records sent (a pulse counter).
    pub pulses: u64,
    rng: StdRng,
}

/// Events the unit logs as they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happening {
    BatteryFull,
    LowBatteryDisconnect,
    LightsOn,
    TamperTripped,
}

impl Happening {
    pub const fn text(self) -> &'static str {
        match self {
            Self::BatteryFull => "battery full, charging paused",
            Self::LowBatteryDisconnect => "low battery: loads disconnected",
            Self::LightsOn => "lights on",
            Self::TamperTripped => "tamper switch opened",
        }
    }
}

impl Model {
    /// A unit starting at `hour` of the simulated day, with randomness from `seed`.
    pub fn new(profile: Profile, hour: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let state_of_charge = match profile {
            Profile::FlatBattery => 12.0,
            _ => rng.gen_range(45.0..90.0),
        };
        Self {
            profile,
            hour: hour.rem_euclid(24.0),
            state_of_charge,
            temperature: 28.0,
            solar_w: 0.0,
            load_w: 0.0,
            enabled: true,
            tamper_enabled: true,
            balance: match profile {
                Profile::NoCredit => 0,
                _ => rng.gen_range(3..30) * 86_400,
            },
            applied: Vec::new(),
            pulses: 0,
            rng,
        }
    }

    /// Whether the tamper switch reads tripped.
    pub fn tamper_triggered(&self) -> bool {
        self.profile == Profile::Tamper
    }

    /// Battery voltage from the state of charge (a 12 V lead-acid curve, roughly).
    pub fn voltage(&self) -> f64 {
        11.2 + 1.7 * self.state_of_charge / 100.0
    }

    /// Battery current (A): positive while charging.
    pub fn current(&self) -> f64 {
        (self.solar_w - self.load_w) / self.voltage()
    }

    /// Advances `real` seconds of wall time, `sim_hours` of simulated day; returns what
    /// happened worth an event log line.
    pub fn advance(&mut self, real: Duration, sim_hours: f64) -> Vec<Happening> {
        let mut events = Vec::new();
        let before_hour = self.hour;
        self.hour = (self.hour + sim_hours).rem_euclid(24.0);
        let sun = ((self.hour - 6.0) / 12.0 * std::f64::consts::PI)
            .sin()
            .max(0.0);
        let cloud = self.rng.gen_range(0.7..1.0);
        self.solar_w = match self.profile {
            Profile::FlatBattery => 0.0,
            _ => PEAK_SOLAR_W * sun * cloud,
        };
        let lights = (18.0..23.0).contains(&self.hour);
        if lights && !(18.0..23.0).contains(&before_hour) {
            events.push(Happening::LightsOn);
        }
        // Without credit or when disabled, the unit cuts its loads.
        let supplied = self.enabled && self.balance > 0 && self.state_of_charge > 5.0;
        self.load_w = if supplied {
            4.0 + if lights { 25.0 } else { 0.0 } + self.rng.gen_range(0.0..3.0)
        } else {
            0.0
        };
        let was = self.state_of_charge;
        let wh = (self.solar_w - self.load_w) * sim_hours;
        self.state_of_charge = (self.state_of_charge + wh / CAPACITY_WH * 100.0).clamp(0.0, 100.0);
        if self.profile == Profile::FlatBattery {
            // A dead panel: it never recovers.
            self.state_of_charge = self.state_of_charge.min(12.0);
        }
        if was < 100.0 && self.state_of_charge >= 100.0 {
            events.push(Happening::BatteryFull);
        }
        if was > 5.0 && self.state_of_charge <= 5.0 {
            events.push(Happening::LowBatteryDisconnect);
        }
        let ambient = 24.0 + 8.0 * sun;
        let target = match self.profile {
            Profile::Hot => 68.0 + 4.0 * sun,
            _ => ambient + self.solar_w / 10.0,
        };
        self.temperature += (target - self.temperature) * 0.5 + self.rng.gen_range(-0.3..0.3);
        self.balance = (self.balance - real.as_secs() as i64).max(0);
        if self.profile == Profile::Tamper && self.pulses == 0 {
            events.push(Happening::TamperTripped);
        }
        self.pulses += 1;
        events
    }

    /// Applies one payment command (seconds of credit; negative for a bad payment, zero
    /// zeroes the balance). Returns `false` for a transaction id already applied.
    pub fn apply_payment(&mut self, value: i64, transaction_id: &str) -> bool {
        if self.applied.iter().any(|t| t == transaction_id) {
            return false;
        }
        self.applied.push(transaction_id.to_string());
        self.balance = if value == 0 {
            0
        } else {
            (self.balance + value).max(0)
        };
        true
    }

    /// Whether a flaky unit drops off the network now (about once per 40 reports).
    pub fn drops_off(&mut self) -> bool {
        self.profile == Profile::Flaky && self.rng.gen_bool(1.0 / 40.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(10);

    #[test]
    fn a_sunny_day_charges_the_battery_and_an_evening_drains_it() {
        let mut m = Model::new(Profile::Normal, 8.0, 1);
        m.state_of_charge = 40.0;
        for _ in 0..12 {
            m.advance(TICK, 0.25);
        }
        assert!(m.state_of_charge > 40.0, "{}", m.state_of_charge);
        assert!(m.solar_w > 0.0 && m.current() > 0.0);
        let mut night = Model::new(Profile::Normal, 19.0, 1);
        night.state_of_charge = 60.0;
        for _ in 0..8 {
            night.advance(TICK, 0.25);
        }
        assert!(night.state_of_charge < 60.0);
        assert_eq!(night.solar_w, 0.0);
        assert!(night.load_w > 20.0 && night.current() < 0.0);
    }

    #[test]
    fn misbehaving_units_cross_the_default_thresholds() {
        let mut hot = Model::new(Profile::Hot, 12.0, 2);
        let mut flat = Model::new(Profile::FlatBattery, 12.0, 3);
        for _ in 0..6 {
            hot.advance(TICK, 0.1);
            flat.advance(TICK, 0.1);
        }
        assert!(hot.temperature > 60.0, "{}", hot.temperature);
        assert!(flat.state_of_charge < 20.0 && flat.voltage() < 11.5);
        assert!(Model::new(Profile::Tamper, 0.0, 4).tamper_triggered());
        assert_eq!(Model::new(Profile::NoCredit, 0.0, 5).balance, 0);
    }

    #[test]
    fn no_credit_cuts_the_load_and_a_payment_restores_it_once() {
        let mut m = Model::new(Profile::NoCredit, 20.0, 6);
        m.advance(TICK, 0.1);
        assert_eq!(m.load_w, 0.0);
        assert!(m.apply_payment(86_400, "t1"));
        assert!(
            !m.apply_payment(86_400, "t1"),
            "a repeated transaction applies twice"
        );
        assert_eq!(m.balance, 86_400);
        m.advance(TICK, 0.1);
        assert!(m.load_w > 0.0);
    }
}
