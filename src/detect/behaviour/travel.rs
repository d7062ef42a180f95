//! `impossible_travel`: one identity seen from two places faster than an airliner flies.
//!
//! Client addresses (after trusted forwarding headers) are placed with a MaxMind-format city
//! database (`maxminddb`). Per identity (subject pseudonym) the detector keeps its last placed
//! location and the last time it was seen there. When the identity appears from a new address
//! that the database places, the implied speed is
//! `max(0, distance - radius_a - radius_b) / time between`, each radius being the database's
//! accuracy radius (so two imprecise places are never "far" just by their fuzz). It alerts when
//! the distance is at least `min_distance_km` and the speed above `max_speed_kmh`. Addresses the
//! database does not place (private ranges, unknown networks) neither alert nor move the
//! reference place.
//!
//! Only the pseudonym kinds in `identity_kinds` are judged: people (users, their tokens and
//! sessions) by default, not API keys, which services use from several regions at once.
//!
//! Without a database the detector is off and says so in its name; loading the database is the
//! only I/O, done once when the engine starts. Lookups happen only when an identity's address
//! changes, so a steady client costs one comparison per request.
//!
//! Invariants: at most `max_identities` identities are tracked (idle ones swept after
//! `idle_secs`, new ones turned away and counted beyond); evidence names places (city,
//! country), never more than the alert's own client address and the previous address.

use super::{key_hash, Table};
use crate::alert::{AlertKind, Severity};
use crate::common::Timestamp;
use crate::detect::config::Problems;
use crate::detect::{Context, Detector, Finding};
use maxminddb::{geoip2, Reader};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;

/// Mean Earth radius (IUGG), kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Settings of `impossible_travel` (`[detect.behaviour.travel]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TravelConfig {
    /// Run the detector (it is off anyway without a GeoIP database).
    pub enabled: bool,
    /// Implied speeds above this, in km/h, are impossible (an airliner cruises near 900).
    pub max_speed_kmh: f64,
    /// Moves shorter than this, in km, never alert (neighbouring cities, mobile networks).
    pub min_distance_km: f64,
    /// Places with an accuracy radius above this, in km, are too vague to judge.
    pub max_accuracy_radius_km: u32,
    /// Identities tracked at once (`identities_turned_away` beyond).
    pub max_identities: usize,
    /// An identity unseen for this many seconds may be forgotten to make room.
    pub idle_secs: u64,
    /// Pseudonym kinds judged: `u` (JWT subject or Basic user), `t` (opaque bearer token),
    /// `s` (session cookie), `k` (API key). API keys are left out by default: service
    /// credentials legitimately run from several regions at once.
    pub identity_kinds: Vec<String>,
}

impl Default for TravelConfig {
    fn default() -> Self {
        TravelConfig {
            enabled: true,
            max_speed_kmh: 1000.0,
            min_distance_km: 500.0,
            max_accuracy_radius_km: 1000,
            max_identities: 200_000,
            idle_secs: 24 * 3600,
            identity_kinds: ["u", "t", "s"].map(String::from).to_vec(),
        }
    }
}

impl TravelConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        let k = |s: &str| format!("behaviour.travel.{s}");
        p.range(&k("max_speed_kmh"), self.max_speed_kmh, 100.0, 100_000.0);
        p.range(&k("min_distance_km"), self.min_distance_km, 0.0, 20_100.0);
        p.range(
            &k("max_accuracy_radius_km"),
            self.max_accuracy_radius_km,
            1,
            20_000,
        );
        p.range(&k("max_identities"), self.max_identities, 1, 100_000_000);
        p.range(&k("idle_secs"), self.idle_secs, 60, 366 * 86_400);
        if let Some(bad) = self
            .identity_kinds
            .iter()
            .find(|kind| !["u", "t", "s", "k"].contains(&kind.as_str()))
        {
            p.fail(&k("identity_kinds"), bad, "kinds are u, t, s and k");
        }
    }
}

/// What `impossible_travel` did and turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TravelCounters {
    /// A database was loaded; without one the detector does nothing.
    pub database_loaded: bool,
    /// Database lookups (one per change of an identity's address).
    pub lookups: u64,
    /// Lookups that found no place, or one too vague (`max_accuracy_radius_km`).
    pub not_placed: u64,
    /// Lookups the database answered with an error (corrupt record).
    pub lookup_errors: u64,
    pub identities_turned_away: u64,
    pub findings: u64,
}

/// A place the database gave for an address.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    pub lat: f64,
    pub lon: f64,
    pub radius_km: f64,
    pub city: Option<String>,
    pub country: Option<String>,
}

impl Place {
    /// `London, GB`, `GB` or `?`, for summaries.
    fn label(&self) -> String {
        match (&self.city, &self.country) {
            (Some(c), Some(k)) => format!("{c}, {k}"),
            (None, Some(k)) => k.clone(),
            (Some(c), None) => c.clone(),
            (None, None) => format!("{:.2},{:.2}", self.lat, self.lon),
        }
    }

    fn evidence(&self, ip: IpAddr) -> serde_json::Value {
        serde_json::json!({
            "ip": ip.to_string(),
            "city": self.city,
            "country": self.country,
            "lat": (self.lat * 1e4).round() / 1e4,
            "lon": (self.lon * 1e4).round() / 1e4,
            "accuracy_radius_km": self.radius_km,
        })
    }
}

/// Great-circle distance in km between two (latitude, longitude) points in degrees
/// (haversine; good to about 0.5 % on the real ellipsoid, far finer than GeoIP).
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().clamp(0.0, 1.0).asin()
}

/// The implied speed in km/h of a move of `distance_km` in `secs`, after allowing both
/// accuracy radii; a zero interval counts as one second.
pub fn implied_speed_kmh(distance_km: f64, radius_a_km: f64, radius_b_km: f64, secs: f64) -> f64 {
    let effective = (distance_km - radius_a_km - radius_b_km).max(0.0);
    effective / (secs.max(1.0) / 3600.0)
}

/// A city database, read whole into memory once.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

/// What a lookup gave.
enum Lookup {
    Placed(Place),
    NotPlaced,
    Error,
}

impl GeoDb {
    /// Reads the database at `path`; the error says why it is unusable.
    pub fn open(path: &Path) -> Result<GeoDb, String> {
        Reader::open_readfile(path)
            .map(|reader| GeoDb { reader })
            .map_err(|e| e.to_string())
    }

    /// The place of `ip`, if the database has coordinates for it.
    pub fn place(&self, ip: IpAddr) -> Option<Place> {
        match self.lookup(ip) {
            Lookup::Placed(p) => Some(p),
            _ => None,
        }
    }

    fn lookup(&self, ip: IpAddr) -> Lookup {
        let found = self
            .reader
            .lookup(ip)
            .and_then(|r| r.decode::<geoip2::City<'_>>());
        let city = match found {
            Ok(Some(city)) => city,
            Ok(None) => return Lookup::NotPlaced,
            Err(_) => return Lookup::Error,
        };
        let loc = &city.location;
        let (Some(lat), Some(lon)) = (loc.latitude, loc.longitude) else {
            return Lookup::NotPlaced;
        };
        if !lat.is_finite() || !lon.is_finite() {
            return Lookup::NotPlaced;
        }
        Lookup::Placed(Place {
            lat,
            lon,
            radius_km: f64::from(loc.accuracy_radius.unwrap_or(0)),
            city: city.city.names.english.map(str::to_owned),
            country: city.country.iso_code.map(str::to_owned),
        })
    }
}

/// One identity: the last address seen and the last place it was placed at.
#[derive(Debug, Default)]
struct Track {
    last_ip: Option<IpAddr>,
    /// Place, the address that gave it, and the last time the identity was seen there.
    place: Option<(Place, IpAddr, Timestamp)>,
}

/// The `impossible_travel` detector; see the module documentation.
pub struct ImpossibleTravel {
    cfg: TravelConfig,
    db: Option<GeoDb>,
    tracks: Table<u64, Track>,
    counters: TravelCounters,
}

impl ImpossibleTravel {
    /// The detector over `db`; `None` leaves it off.
    pub fn new(cfg: &TravelConfig, db: Option<GeoDb>) -> ImpossibleTravel {
        ImpossibleTravel {
            cfg: cfg.clone(),
            counters: TravelCounters {
                database_loaded: db.is_some(),
                ..TravelCounters::default()
            },
            db,
            tracks: Table::default(),
        }
    }

    pub fn counters(&self) -> TravelCounters {
        let mut c = self.counters.clone();
        c.identities_turned_away = self.tracks.turned_away();
        c
    }
}

impl Detector for ImpossibleTravel {
    fn name(&self) -> &'static str {
        if self.db.is_some() {
            "impossible_travel"
        } else {
            "impossible_travel (off: no geoip database)"
        }
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let (true, Some(db), Some(subject)) =
            (self.cfg.enabled, &self.db, cx.identity.subject.as_ref())
        else {
            return;
        };
        let kind = subject.as_str().split_once(':').map_or("", |(k, _)| k);
        if !self.cfg.identity_kinds.iter().any(|k| k == kind) {
            return;
        }
        let ip = cx.identity.client_ip;
        let key = key_hash(&[b"subject", subject.as_str().as_bytes()]);
        let cfg = &self.cfg;
        let Some(track) = self
            .tracks
            .entry(key, cx.ts, cfg.max_identities, cfg.idle_secs)
        else {
            return;
        };
        if track.last_ip == Some(ip) {
            if let Some((_, place_ip, seen)) = &mut track.place {
                if *place_ip == ip {
                    *seen = (*seen).max(cx.ts);
                }
            }
            return;
        }
        track.last_ip = Some(ip);
        self.counters.lookups = self.counters.lookups.saturating_add(1);
        let here = match db.lookup(ip) {
            Lookup::Placed(p) if p.radius_km <= f64::from(cfg.max_accuracy_radius_km) => p,
            Lookup::Error => {
                self.counters.lookup_errors = self.counters.lookup_errors.saturating_add(1);
                return;
            }
            _ => {
                self.counters.not_placed = self.counters.not_placed.saturating_add(1);
                return;
            }
        };
        let previous = track.place.replace((here.clone(), ip, cx.ts));
        let Some((there, there_ip, then)) = previous else {
            return;
        };
        let distance = haversine_km((there.lat, there.lon), (here.lat, here.lon));
        let secs = if cx.ts >= then {
            cx.ts.saturating_since(then).as_secs_f64()
        } else {
            then.saturating_since(cx.ts).as_secs_f64()
        };
        let speed = implied_speed_kmh(distance, there.radius_km, here.radius_km, secs);
        if distance < cfg.min_distance_km || speed <= cfg.max_speed_kmh {
            return;
        }
        let minutes = (secs / 60.0 * 10.0).round() / 10.0;
        let summary = format!(
            "{} was seen in {} then {} minutes later in {}, {:.0} km apart: {:.0} km/h after accuracy allowances (limit {:.0})",
            subject.as_str(),
            there.label(),
            minutes,
            here.label(),
            distance,
            speed.min(1e9),
            cfg.max_speed_kmh
        );
        self.counters.findings = self.counters.findings.saturating_add(1);
        let far = speed > 10.0 * cfg.max_speed_kmh;
        out.push(
            Finding::new(AlertKind::ImpossibleTravel, cx)
                .client_scope()
                .severity(Severity::High)
                .confidence(if far { 0.9 } else { 0.75 })
                .summary(summary)
                .with("from", there.evidence(there_ip))
                .with("to", here.evidence(ip))
                .with("distance_km", distance.round())
                .with("minutes_between", minutes)
                .with("implied_speed_kmh", speed.min(1e9).round())
                .with("accuracy_allowance_km", there.radius_km + here.radius_km)
                .with("max_speed_kmh", cfg.max_speed_kmh)
                .with("min_distance_km", cfg.min_distance_km),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONDON: (f64, f64) = (51.5142, -0.0931);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);

    #[test]
    fn haversine_matches_known_distances() {
        // London to New York is about 5,570 km; a point to itself is 0; a quarter meridian is
        // 10,008 km on the mean sphere.
        let d = haversine_km(LONDON, NEW_YORK);
        assert!((d - 5_570.0).abs() < 15.0, "{d}");
        assert_eq!(haversine_km(LONDON, LONDON), 0.0);
        let q = haversine_km((0.0, 0.0), (90.0, 0.0));
        assert!((q - 10_007.5).abs() < 1.0, "{q}");
        // Antipodes do not overflow the asin domain.
        let a = haversine_km((0.0, 0.0), (0.0, 180.0));
        assert!((a - 20_015.1).abs() < 1.0, "{a}");
    }

    #[test]
    fn speed_allows_for_both_accuracy_radii() {
        // 1000 km in one hour: 1000 km/h; with 100 + 200 km of fuzz, 700 km/h.
        assert_eq!(implied_speed_kmh(1000.0, 0.0, 0.0, 3600.0), 1000.0);
        assert_eq!(implied_speed_kmh(1000.0, 100.0, 200.0, 3600.0), 700.0);
        // Fuzz larger than the distance: no movement at all.
        assert_eq!(implied_speed_kmh(100.0, 60.0, 60.0, 60.0), 0.0);
        // A zero interval is one second, not a division by zero.
        assert_eq!(implied_speed_kmh(10.0, 0.0, 0.0, 0.0), 36_000.0);
    }

    #[test]
    fn bad_settings_are_named() {
        let c = TravelConfig {
            max_speed_kmh: 10.0,
            idle_secs: 0,
            ..TravelConfig::default()
        };
        let mut p = Problems::default();
        c.check(&mut p);
        let keys: Vec<&str> = p.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "behaviour.travel.max_speed_kmh",
                "behaviour.travel.idle_secs"
            ]
        );
    }
}
