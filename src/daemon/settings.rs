//! Raw `apitap run` flags and the configuration file become one validated [`RunSettings`].
//!
//! This is the only place where flags and file are combined: a flag overrides the file key it
//! names, and the result is validated by the same checks as the file, so a bad `--filter`
//! gets the same message as a bad `[capture] filter`.

use crate::capture::LiveOptions;
use crate::config::{Config, ConfigError};
use std::path::{Path, PathBuf};

/// What to read packets from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A live interface.
    Live(LiveOptions),
    /// Capture files, merged in timestamp order.
    Replay {
        files: Vec<PathBuf>,
        /// Sleep between packets by their timestamp deltas instead of reading at full speed.
        realtime: bool,
    },
}

/// The raw flags of `apitap run`, as parsed by the CLI.
#[derive(Clone, Debug, Default)]
pub struct RunFlags {
    pub interface: Option<String>,
    pub pcaps: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    pub realtime: bool,
    pub filter: Option<String>,
    pub hold: bool,
}

/// Everything `apitap run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub source: Source,
    pub config: Config,
    /// The file the config came from, reloaded on SIGHUP; `None` runs on the defaults.
    pub config_path: Option<PathBuf>,
    /// Packet workers, resolved from `[daemon] workers` (0 = one per core).
    pub workers: usize,
    /// After a replay drained, keep serving metrics until SIGTERM or SIGINT.
    pub hold: bool,
}

/// Why `apitap run` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "nothing to capture: give --interface IFACE or --pcap FILE..., or set [capture] \
         interface in the configuration file"
    )]
    NoSource,
    #[error("--realtime and --hold apply to --pcap replays only")]
    ReplayOnly,
}

impl RunSettings {
    /// Combines flags, the file (or the defaults) and the environment's secrets.
    pub fn resolve(
        flags: RunFlags,
        env: impl Fn(&str) -> Option<String>,
        cores: usize,
    ) -> Result<RunSettings, SettingsError> {
        let origin = flags
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("(defaults)"));
        let mut config = match &flags.config {
            Some(p) => Config::load(p, &env)?,
            None => Config::from_env(&env)?,
        };
        if let Some(f) = &flags.filter {
            config.capture.filter = f.clone();
            // Validated again with the flag in place: the checks live in one place.
            config.validate(Path::new(&format!("{} with --filter", origin.display())))?;
        }
        let source = if !flags.pcaps.is_empty() {
            Source::Replay {
                files: flags.pcaps.clone(),
                realtime: flags.realtime,
            }
        } else {
            if flags.realtime || flags.hold {
                return Err(SettingsError::ReplayOnly);
            }
            let interface = flags
                .interface
                .clone()
                .filter(|i| !i.is_empty())
                .or_else(|| Some(config.capture.interface.clone()).filter(|i| !i.is_empty()))
                .ok_or(SettingsError::NoSource)?;
            let c = &config.capture;
            Source::Live(LiveOptions {
                interface,
                promiscuous: c.promiscuous,
                snaplen_bytes: c.snaplen_bytes,
                filter: c.filter.clone(),
                buffer_bytes: c.buffer_bytes,
                immediate: c.immediate,
                read_timeout_ms: c.read_timeout_ms,
            })
        };
        let workers = match config.daemon.workers {
            0 => cores.clamp(1, 256),
            n => n,
        };
        Ok(RunSettings {
            source,
            config,
            config_path: flags.config,
            workers,
            hold: flags.hold,
        })
    }

    /// The number of CPU cores, 1 if unknown.
    pub fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: RunFlags) -> Result<RunSettings, SettingsError> {
        RunSettings::resolve(flags, |_| None, 4)
    }

    #[test]
    fn interface_flag_wins_and_carries_the_capture_section() {
        let s = resolve(RunFlags {
            interface: Some("lo".into()),
            filter: Some("tcp port 8080".into()),
            ..RunFlags::default()
        })
        .expect("valid");
        let Source::Live(o) = s.source else {
            panic!("live source expected");
        };
        assert_eq!(o.interface, "lo");
        assert_eq!(o.filter, "tcp port 8080");
        assert_eq!(o.snaplen_bytes, 262_144);
        assert_eq!(s.workers, 4, "0 workers means one per core");
    }

    #[test]
    fn replay_and_its_options() {
        let s = resolve(RunFlags {
            pcaps: vec!["a.pcap".into(), "b.pcap".into()],
            realtime: true,
            hold: true,
            ..RunFlags::default()
        })
        .expect("valid");
        assert_eq!(
            s.source,
            Source::Replay {
                files: vec!["a.pcap".into(), "b.pcap".into()],
                realtime: true
            }
        );
        assert!(s.hold);
    }

    #[test]
    fn refusals_say_what_to_do() {
        let cases = [
            (RunFlags::default(), "nothing to capture: give --interface"),
            (
                RunFlags {
                    interface: Some("lo".into()),
                    realtime: true,
                    ..RunFlags::default()
                },
                "--realtime and --hold apply to --pcap replays only",
            ),
            (
                RunFlags {
                    interface: Some("lo".into()),
                    filter: Some("port banana".into()),
                    ..RunFlags::default()
                },
                "(defaults) with --filter: [capture] filter = \"port banana\": not a valid BPF",
            ),
        ];
        for (flags, want) in cases {
            let msg = resolve(flags).expect_err("must be refused").to_string();
            assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
        }
    }
}
