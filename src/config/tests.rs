use super::*;

const FILE: &str = "config.toml";

/// Parses, applies `env`, validates: what `Config::load` does, without a file.
fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut cfg = Config::parse(text, Path::new(FILE))?;
    cfg.apply_env(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    });
    cfg.validate(Path::new(FILE))?;
    Ok(cfg)
}

/// The error text for a file that must be refused.
fn refused(text: &str) -> String {
    match load_text(text, &[]) {
        Ok(cfg) => panic!("accepted a bad file:\n{text}\nas {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn default_file_parses_to_the_defaults_and_is_valid() {
    let cfg = load_text(DEFAULT_FILE, &[]).expect("the shipped default file must load");
    assert_eq!(cfg, Config::default());
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(load_text("", &[]).expect("empty file"), Config::default());
}

/// Every key of every section is in the default file, in its section, with a comment directly
/// above it: the file is the documentation, so a new option cannot ship undocumented. A nested
/// table (`[alert] spool`) is documented as its own section (`[alert.spool]`), checked the same
/// way.
#[test]
fn default_file_documents_every_key() {
    let value = toml::Value::try_from(Config::default()).expect("serialize defaults");
    let lines: Vec<&str> = DEFAULT_FILE.lines().collect();
    let mut missing = Vec::new();
    let mut sections: Vec<(String, &toml::Table)> = value
        .as_table()
        .expect("top-level table")
        .iter()
        .map(|(name, keys)| (name.clone(), keys.as_table().expect("section table")))
        .collect();
    while let Some((section, keys)) = sections.pop() {
        let header = format!("[{section}]");
        let Some(start) = lines.iter().position(|l| l.trim() == header) else {
            missing.push(header);
            continue;
        };
        let end = lines
            .iter()
            .skip(start + 1)
            .position(|l| l.starts_with('['))
            .map_or(lines.len(), |p| start + 1 + p);
        for (key, v) in keys {
            if let Some(nested) = v.as_table() {
                sections.push((format!("{section}.{key}"), nested));
                continue;
            }
            let at = (start + 1..end).find(|&i| {
                lines[i]
                    .split_once('=')
                    .is_some_and(|(k, _)| k.trim() == key)
            });
            match at {
                Some(i) if lines[i - 1].starts_with('#') => {}
                Some(_) => missing.push(format!("{section}.{key} (no comment above it)")),
                None => missing.push(format!("{section}.{key}")),
            }
        }
    }
    assert!(missing.is_empty(), "deploy/apitap.toml lacks: {missing:?}");
}

#[test]
fn out_of_range_values_name_file_section_key_value_and_range() {
    // (file text, the whole expected message)
    let cases = [
        (
            "[capture]\nsnaplen_bytes = 0\n",
            "config.toml: [capture] snaplen_bytes = 0: must be between 64 and 262144",
        ),
        (
            "[capture]\nread_timeout_ms = 60000\n",
            "config.toml: [capture] read_timeout_ms = 60000: must be between 1 and 10000",
        ),
        (
            "[daemon]\nworkers = 1000\n",
            "config.toml: [daemon] workers = 1000: must be between 0 and 256",
        ),
        (
            "[daemon]\nmax_queued_batches = 0\n",
            "config.toml: [daemon] max_queued_batches = 0: must be between 1 and 65536",
        ),
        (
            "[flow]\nmax_flows = 0\n",
            "config.toml: [flow] max_flows = 0: must be between 1 and 100000000",
        ),
        (
            "[stream]\nmax_ahead_bytes = 4294967296\n",
            "config.toml: [stream] max_ahead_bytes = 4294967296: must be between 1 and 2147483648",
        ),
        (
            "[http]\nmax_headers = 0\n",
            "config.toml: [http] max_headers = 0: must be between 1 and 10000",
        ),
        (
            "[decode]\nfrag_memcap_bytes = 100\n",
            "config.toml: [decode] frag_memcap_bytes = 100: must be between 65536 and 17179869184",
        ),
        (
            "[metrics]\nroute_refresh_secs = 0\n",
            "config.toml: [metrics] route_refresh_secs = 0: must be between 1 and 86400",
        ),
        (
            "[output]\nflush_interval_ms = 1\n",
            "config.toml: [output] flush_interval_ms = 1: must be between 10 and 60000",
        ),
        (
            "[identity]\nmax_jwt_bytes = 0\n",
            "config.toml: [identity] max_jwt_bytes = 0: must be between 1 and 1048576",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(refused(text), want, "for {text:?}");
    }
}

#[test]
fn inconsistent_values_say_what_they_depend_on() {
    let cases = [
        (
            "[capture]\nsnaplen_bytes = 65535\n[daemon]\nbatch_bytes = 1000\n",
            "config.toml: [daemon] batch_bytes = 1000: must be between [capture] snaplen_bytes \
             (65535) and 67108864, so that any captured packet fits in a batch",
        ),
        (
            "[metrics]\nmax_route_series = 100\nmax_tracked_routes = 10\n",
            "config.toml: [metrics] max_tracked_routes = 10: must be between max_route_series \
             (100) and 100000",
        ),
        (
            "[routes]\nfold_min_distinct = 300\n",
            "config.toml: [routes] max_tracked_values = 256: must be more than \
             fold_min_distinct (300) and at most 1000000: a position must track enough values \
             to decide to fold",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(refused(text), want, "for {text:?}");
    }
}

#[test]
fn malformed_values_are_refused_with_their_key() {
    // (file text, fragments the message must contain)
    let cases: [(&str, &[&str]); 6] = [
        (
            "[metrics]\nlisten = \"localhost\"\n",
            &["config.toml: [metrics] listen = \"localhost\": must be an address and port"],
        ),
        (
            "[capture]\nfilter = \"port banana\"\n",
            &[
                "config.toml: [capture] filter = \"port banana\": not a valid BPF filter",
                "tcpdump -d",
            ],
        ),
        (
            "[identity]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            &["config.toml: [identity] trusted_proxies = \"10.0.0.0/33\": is not a CIDR"],
        ),
        (
            "[identity]\napi_key_headers = [\"x api key\"]\n",
            &["config.toml: [identity] api_key_headers = \"x api key\": is not a usable name"],
        ),
        (
            "[daemon]\nuser = \" apitap\"\n",
            &["config.toml: [daemon] user = \" apitap\": is not a user name"],
        ),
        (
            "[capture]\ninterface = \"eth0 \"\n",
            &["config.toml: [capture] interface = \"eth0 \": has leading or trailing spaces"],
        ),
    ];
    for (text, want) in cases {
        let msg = refused(text);
        for w in want {
            assert!(msg.contains(w), "{text:?}: {msg:?} lacks {w:?}");
        }
    }
}

#[test]
fn parse_errors_name_line_column_section_and_key() {
    // (file text, prefix the message must start with, fragment it must contain)
    let cases = [
        (
            "# comment\n[capture]\nsnaplen = 1500\n",
            "config.toml:3:1: [capture] snaplen: ",
            "unknown field `snaplen`",
        ),
        (
            "[captur]\nsnaplen_bytes = 1500\n",
            "config.toml:1:",
            "unknown field `captur`",
        ),
        (
            "[daemon]\nworkers = \"four\"\n",
            "config.toml:2:11: [daemon] workers: ",
            "invalid type: string \"four\"",
        ),
        (
            "[flow]\nmax_flows = -1\n",
            "config.toml:2:13: [flow] max_flows: ",
            "-1",
        ),
        (
            "[daemon]\nlog_level = \"loud\"\n",
            "config.toml:2:13: [daemon] log_level: ",
            "unknown variant `loud`",
        ),
        (
            "[http]\nbody_limit_bytes = 10 MiB\n",
            "config.toml:2:",
            "[http] body_limit_bytes",
        ),
        (
            "[flow]\nmax_flows = 1\nmax_flows = 2\n",
            "config.toml:3:",
            "duplicate key",
        ),
    ];
    for (text, prefix, fragment) in cases {
        let msg = refused(text);
        assert!(
            msg.starts_with(prefix),
            "{text:?}: {msg:?} does not start with {prefix:?}"
        );
        assert!(
            msg.contains(fragment),
            "{text:?}: {msg:?} lacks {fragment:?}"
        );
        assert!(!msg.contains('\n'), "one line per problem: {msg:?}");
    }
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let msg =
        refused("[capture]\nsnaplen_bytes = 1\n[flow]\nmax_flows = 0\n[http]\nmax_headers = 0\n");
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 3, "{msg}");
    assert!(lines[0].contains("[capture] snaplen_bytes"));
    assert!(lines[1].contains("[flow] max_flows"));
    assert!(lines[2].contains("[http] max_headers"));
}

#[test]
fn environment_overrides_secrets() {
    let text = "[secrets]\npseudonym_key = \"from-the-file-0123456789\"\n";
    let from_file = load_text(text, &[]).expect("valid");
    assert_eq!(
        from_file.secrets.pseudonym_key.expose(),
        "from-the-file-0123456789"
    );

    let env = [
        (ENV_PSEUDONYM_KEY, "from-the-environment-0123"),
        (ENV_WEBHOOK_SECRET, "hook-secret"),
    ];
    let cfg = load_text(text, &env).expect("valid");
    assert_eq!(
        cfg.secrets.pseudonym_key.expose(),
        "from-the-environment-0123"
    );
    assert_eq!(cfg.secrets.webhook_secret.expose(), "hook-secret");

    // A variable that is set but empty does not erase the file's value.
    let cfg = load_text(text, &[(ENV_PSEUDONYM_KEY, "")]).expect("valid");
    assert_eq!(
        cfg.secrets.pseudonym_key.expose(),
        "from-the-file-0123456789"
    );
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let secret = "short-secret";
    let msg = match load_text("", &[(ENV_PSEUDONYM_KEY, secret)]) {
        Ok(_) => panic!("a 12-byte key must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("[secrets] pseudonym_key = <secret of 12 bytes>"),
        "{msg}"
    );
    assert!(msg.contains(ENV_PSEUDONYM_KEY), "{msg}");
    assert!(!msg.contains(secret), "{msg}");

    let cfg = load_text("", &[(ENV_PSEUDONYM_KEY, "a-long-enough-secret-value")]).expect("ok");
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("a-long-enough-secret-value"), "{debug}");
}

#[test]
fn changed_keys_lists_section_and_key() {
    let old = Config::default();
    let mut new = old.clone();
    assert!(old.changed_keys(&new).is_empty());
    new.daemon.log_level = LogLevel::Debug;
    new.flow.max_flows = 10;
    new.secrets.webhook_secret = Secret::new("x");
    assert_eq!(
        old.changed_keys(&new),
        vec![
            "daemon.log_level",
            "flow.max_flows",
            "secrets.webhook_secret"
        ]
    );
}

#[test]
fn missing_file_is_named() {
    let path = Path::new("/nonexistent/apitap.toml");
    let err = Config::load(path, |_| None).expect_err("no such file");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/apitap.toml: cannot read: "),
        "{err}"
    );
}

/// Every live key is really taken over by `apply_live`, and nothing else is.
#[test]
fn apply_live_takes_exactly_the_live_keys() {
    let text = "[daemon]\nlog_level = \"debug\"\nworkers = 3\n\
                [output]\nflush_interval_ms = 50\n\
                [metrics]\nmax_route_series = 7\nroute_refresh_secs = 5\n\
                [flow]\nmax_flows = 10\n\
                [detect]\nspec = \"/etc/apitap/openapi.yaml\"\n";
    let new = load_text(text, &[]).expect("valid");
    let mut running = Config::default();
    let (applied, restart) = running.apply_live(&new);
    let mut want: Vec<&str> = LIVE_KEYS.to_vec();
    want.sort();
    assert_eq!(applied, want);
    assert_eq!(restart, ["daemon.workers", "flow.max_flows"]);
    // What still differs is exactly what needs a restart.
    assert_eq!(running.changed_keys(&new), restart);
}

/// A file using every kind of sink, as an operator writes it.
const SINKS: &str = r#"
[alert]
spool_dir = "/var/lib/apitap/spool"
stdout = true

[alert.file]
path = "/var/log/apitap/alerts.jsonl"
max_files = 3

[alert.spool]
fsync = "interval"

[[alert.webhook]]
name = "siem"
url = "https://siem.example/hook"
batch_timeout_secs = 0.25

[[alert.webhook]]
name = "soar"
url = "http://127.0.0.1:8080/hook"

[[alert.alertmanager]]
name = "am"
url = "http://127.0.0.1:9093"
"#;

#[test]
fn alert_section_takes_every_sink() {
    let cfg = load_text(SINKS, &[]).expect("valid");
    let a = &cfg.alert;
    assert!(a.stdout);
    assert_eq!(a.file.as_ref().map(|f| f.max_files), Some(3));
    assert_eq!(a.spool.fsync, crate::alert::config::FsyncPolicy::Interval);
    let names: Vec<&str> = a.webhook.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["siem", "soar"]);
    assert_eq!(a.webhook[0].batch_timeout_secs, 0.25);
    assert_eq!(a.webhook[1].timeout_secs, 10, "defaults fill the rest");
    assert_eq!(a.alertmanager[0].resolve_timeout_secs, 300);
    // Nothing signs without a key.
    assert!(cfg.alert_sinks().webhook.iter().all(|w| w.secret.is_none()));
}

#[test]
fn alert_errors_carry_the_section() {
    let cases = [
        (
            "[alert]\nmax_queued_alerts = 0\n",
            "config.toml: [alert] max_queued_alerts = 0: must be between 1 and 1000000",
        ),
        (
            "[[alert.webhook]]\nname = \"siem\"\nurl = \"ftp://siem.example\"\n",
            "config.toml: [alert] webhook[0].url = \"ftp://siem.example\": must be an http:// \
             or https:// URL with a host",
        ),
        (
            "[alert.file]\npath = \"/tmp/a.jsonl\"\nmax_files = 0\n",
            "config.toml: [alert] file.max_files = 0: must be between 1 and 1000",
        ),
        (
            "[alert.spool]\nsegment_bytes = 268435456\n",
            "config.toml: [alert] spool.segment_bytes = 268435456: must be at least 4096 and at \
             most half of max_spool_bytes",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(refused(text), want, "for {text:?}");
    }
    // Parse errors inside an array of tables name that table.
    let msg = refused("[[alert.webhook]]\nname = \"a\"\nurll = \"http://h/\"\n");
    assert!(
        msg.starts_with("config.toml:3:1: [alert.webhook] urll: "),
        "{msg}"
    );
}

/// The webhook key comes only from `[secrets]` (or the environment): written next to the
/// sink, it would sit in plain text in every `Debug` print of the configuration.
#[test]
fn webhook_key_comes_from_secrets_only() {
    let in_sink = "[[alert.webhook]]\nname = \"siem\"\nurl = \"https://siem.example/\"\n\
                   secret = \"written-in-the-file\"\n";
    let msg = refused(in_sink);
    assert_eq!(
        msg,
        "config.toml: [alert] webhook[0].secret = <secret of 19 bytes>: is not read here: set \
         [secrets] webhook_secret or APITAP_WEBHOOK_SECRET instead"
    );
    assert!(!msg.contains("written-in-the-file"));

    let text = "[secrets]\nwebhook_secret = \"from-the-file\"\n[[alert.webhook]]\nname = \
                \"siem\"\nurl = \"https://siem.example/\"\n[[alert.webhook]]\nname = \"b\"\nurl = \
                \"https://b.example/\"\n";
    let cfg = load_text(text, &[]).expect("valid");
    let sinks = cfg.alert_sinks();
    assert!(sinks
        .webhook
        .iter()
        .all(|w| w.secret.as_deref() == Some("from-the-file")));
    let cfg = load_text(text, &[(ENV_WEBHOOK_SECRET, "from-the-environment")]).expect("valid");
    assert!(cfg
        .alert_sinks()
        .webhook
        .iter()
        .all(|w| w.secret.as_deref() == Some("from-the-environment")));
    // The configuration itself holds the key redacted only.
    assert!(cfg.alert.webhook.iter().all(|w| w.secret.is_none()));
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("from-the-environment"), "{debug}");
    // What the sinks get is valid for them.
    assert_eq!(cfg.alert_sinks().validate(), Ok(()));
}

#[test]
fn alert_changes_need_a_restart() {
    let new = load_text(SINKS, &[]).expect("valid");
    let mut running = Config::default();
    let (applied, restart) = running.apply_live(&new);
    assert!(applied.is_empty(), "{applied:?}");
    assert_eq!(
        restart,
        [
            "alert.alertmanager",
            "alert.file",
            "alert.spool",
            "alert.stdout",
            "alert.webhook"
        ]
    );
}
