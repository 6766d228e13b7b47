//! The app as the host sees it: `host.json`, `functions/*/function.json` and the Values of
//! `local.settings.json`, with `%Setting%` references resolved.

use crate::ncrontab::{Schedule, ScheduleError};
use crate::route::{RouteError, RouteTemplate};
use crate::timespan;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Setting that holds the key for `authLevel: function` (the master key is accepted too).
pub const FUNCTION_KEY_SETTING: &str = "DEVHOST_FUNCTION_KEY";
/// Setting that holds the key for `authLevel: admin`.
pub const MASTER_KEY_SETTING: &str = "DEVHOST_MASTER_KEY";

/// Everything that can be wrong with an app root.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("function {function}: {message}")]
    Function { function: String, message: String },
    #[error("missing function keys: {0}")]
    Keys(String),
    #[error("host.json: {0}")]
    Host(String),
    #[error("function {function}: {source}")]
    Schedule {
        function: String,
        source: ScheduleError,
    },
    #[error("function {function}: {source}")]
    Route {
        function: String,
        source: RouteError,
    },
}

/// host.json settings devhost honours.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub executable: String,
    pub arguments: Vec<String>,
    pub working_directory: String,
    pub forwarding: bool,
    pub route_prefix: String,
    pub function_timeout: Option<Duration>,
    pub event_hubs: EventHubsConfig,
}

/// `extensions.eventHubs`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventHubsConfig {
    pub max_batch: usize,
    pub min_batch: usize,
    pub max_wait: Duration,
    pub from_end: bool,
}

/// A function retry policy (`retry` in function.json).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// -1 means retry forever.
    pub max_retry_count: i64,
    pub strategy: RetryStrategy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RetryStrategy {
    Fixed(Duration),
    Exponential { min: Duration, max: Duration },
}

impl RetryPolicy {
    /// Whether retry number `attempt` (1-based) may run.
    pub fn allows(&self, attempt: i64) -> bool {
        self.max_retry_count < 0 || attempt <= self.max_retry_count
    }

    /// Delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: i64) -> Duration {
        match &self.strategy {
            RetryStrategy::Fixed(d) => *d,
            RetryStrategy::Exponential { min, max } => {
                let factor = 2u32.saturating_pow((attempt.max(1) - 1).min(30) as u32);
                min.saturating_mul(factor).min(*max)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    Anonymous,
    Function,
    Admin,
}

/// The trigger of a function, with its resolved properties.
#[derive(Debug, Clone)]
pub enum Trigger {
    Http {
        name: String,
        route: RouteTemplate,
        /// Upper-case; empty means every method.
        methods: Vec<String>,
        auth: AuthLevel,
    },
    Timer {
        name: String,
        schedule: Schedule,
        run_on_startup: bool,
    },
    EventHub {
        name: String,
        hub: String,
        consumer_group: String,
        connection: String,
    },
}

/// An output binding devhost applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The HTTP response (`$return` reads `ReturnValue`).
    Http {
        name: String,
    },
    EventHub {
        name: String,
        hub: String,
    },
}

/// One function of the app.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub name: String,
    pub trigger: Trigger,
    pub outputs: Vec<Output>,
    pub retry: Option<RetryPolicy>,
    /// Forwarded HTTP: only httpTrigger + one http out, and forwarding on in host.json.
    pub forwarded: bool,
}

/// The whole app root.
#[derive(Debug, Clone)]
pub struct App {
    pub root: PathBuf,
    pub host: HostConfig,
    pub functions: Vec<FunctionDef>,
    pub values: BTreeMap<String, String>,
}

impl App {
    /// Reads an app root. `overrides` fill settings missing from local.settings.json (the
    /// binary passes the devhost key settings from its environment here).
    /// `defaults` apply where local.settings.json has no value; `overrides` replace its value
    /// (as an app setting changed on the deployed app would).
    pub fn load(
        root: &Path,
        defaults: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<App, AppError> {
        let host_json = read_json(&root.join("host.json"))?;
        let mut values = read_values(&root.join("local.settings.json"))?;
        for (k, v) in defaults {
            values.entry(k.clone()).or_insert_with(|| v.clone());
        }
        values.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let host = parse_host(&host_json)?;
        let mut functions = Vec::new();
        for dir in function_dirs(&root.join("functions"))? {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let json = read_json(&dir.join("function.json"))?;
            functions.push(parse_function(&name, &json, &values, host.forwarding)?);
        }
        Ok(App {
            root: root.to_path_buf(),
            host,
            functions,
            values,
        })
    }

    pub fn function(&self, name: &str) -> Option<&FunctionDef> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Every hub named by a trigger or an output, in name order.
    pub fn hub_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for f in &self.functions {
            if let Trigger::EventHub { hub, .. } = &f.trigger {
                names.push(hub.clone());
            }
            for o in &f.outputs {
                if let Output::EventHub { hub, .. } = o {
                    names.push(hub.clone());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Fails when a function needs a key that no setting provides, naming every such function.
    pub fn check_keys(&self) -> Result<(), AppError> {
        let mut missing = Vec::new();
        for f in &self.functions {
            let Trigger::Http { auth, .. } = &f.trigger else {
                continue;
            };
            let needed = match auth {
                AuthLevel::Anonymous => continue,
                AuthLevel::Function if self.has(MASTER_KEY_SETTING) => continue,
                AuthLevel::Function => FUNCTION_KEY_SETTING,
                AuthLevel::Admin => MASTER_KEY_SETTING,
            };
            if !self.has(needed) {
                missing.push(format!("{} (authLevel {auth:?}) needs {needed}", f.name));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(AppError::Keys(format!(
            "{}; set them in local.settings.json Values or in devhost's environment",
            missing.join(", ")
        )))
    }

    fn has(&self, setting: &str) -> bool {
        self.values.get(setting).is_some_and(|v| !v.is_empty())
    }
}

fn read_json(path: &Path) -> Result<Value, AppError> {
    let text = std::fs::read_to_string(path).map_err(|source| AppError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| AppError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Values of local.settings.json; a missing file means no settings.
fn read_values(path: &Path) -> Result<BTreeMap<String, String>, AppError> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let json = read_json(path)?;
    let mut values = BTreeMap::new();
    if let Some(map) = json.get("Values").and_then(Value::as_object) {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            values.insert(k.clone(), text);
        }
    }
    Ok(values)
}

/// Direct subfolders holding a function.json, except the handler's source folder.
fn function_dirs(dir: &Path) -> Result<Vec<PathBuf>, AppError> {
    let entries = std::fs::read_dir(dir).map_err(|source| AppError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("function.json").is_file())
        .filter(|p| p.file_name().is_some_and(|n| n != "handler"))
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn parse_host(json: &Value) -> Result<HostConfig, AppError> {
    let handler = json.pointer("/customHandler/description");
    let executable = handler
        .and_then(|d| d.get("defaultExecutablePath"))
        .and_then(Value::as_str)
        .unwrap_or("handler")
        .to_string();
    let arguments = handler
        .and_then(|d| d.get("arguments"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let working_directory = handler
        .and_then(|d| d.get("workingDirectory"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let forwarding = json
        .pointer("/customHandler/enableForwardingHttpRequest")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let route_prefix = json
        .pointer("/extensions/http/routePrefix")
        .and_then(Value::as_str)
        .unwrap_or("api")
        .trim_matches('/')
        .to_string();
    let function_timeout =
        match json.get("functionTimeout").and_then(Value::as_str) {
            Some(t) => Some(timespan::parse(t).ok_or_else(|| {
                AppError::Host(format!("functionTimeout {t:?} is not a TimeSpan"))
            })?),
            None => None,
        };
    let hubs = json.pointer("/extensions/eventHubs");
    let number = |key: &str, default: usize| {
        hubs.and_then(|h| h.get(key))
            .and_then(Value::as_u64)
            .map_or(default, |n| n as usize)
    };
    let max_wait = match hubs
        .and_then(|h| h.get("maxWaitTime"))
        .and_then(Value::as_str)
    {
        Some(t) => timespan::parse(t)
            .ok_or_else(|| AppError::Host(format!("maxWaitTime {t:?} is not a TimeSpan")))?,
        None => Duration::from_secs(60),
    };
    let from_end = hubs
        .and_then(|h| h.pointer("/initialOffsetOptions/type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("fromEnd"));
    let max_batch = number("maxEventBatchSize", 100).max(1);
    Ok(HostConfig {
        executable,
        arguments,
        working_directory,
        forwarding,
        route_prefix,
        function_timeout,
        event_hubs: EventHubsConfig {
            max_batch,
            min_batch: number("minEventBatchSize", 1).clamp(1, max_batch),
            max_wait,
            from_end,
        },
    })
}

/// Replaces each `%Name%` with the setting's value; an unknown setting is an error.
pub fn resolve(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            return Err(format!("unmatched % in {text:?}"));
        };
        let name = &after[..end];
        let value = values
            .get(name)
            .ok_or_else(|| format!("setting {name} (used as %{name}%) is not defined"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_function(
    name: &str,
    json: &Value,
    values: &BTreeMap<String, String>,
    forwarding: bool,
) -> Result<FunctionDef, AppError> {
    let fail = |message: String| AppError::Function {
        function: name.to_string(),
        message,
    };
    let bindings = json
        .get("bindings")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("function.json has no bindings array".into()))?;
    let mut trigger = None;
    let mut outputs = Vec::new();
    for binding in bindings {
        let b = binding
            .as_object()
            .ok_or_else(|| fail("a binding is not an object".into()))?;
        let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
        let prop = |key: &str| -> Result<Option<String>, AppError> {
            match b.get(key).and_then(Value::as_str) {
                Some(raw) => resolve(raw, values).map(Some).map_err(fail),
                None => Ok(None),
            }
        };
        let binding_name = prop("name")?.unwrap_or_default();
        if kind.ends_with("Trigger") && trigger.is_some() {
            return Err(fail("more than one trigger".into()));
        }
        match kind {
            "httpTrigger" => trigger = Some(http_trigger(name, &binding_name, b, &prop)?),
            "timerTrigger" => {
                let text = prop("schedule")?
                    .ok_or_else(|| fail("timerTrigger without schedule".into()))?;
                let schedule = Schedule::parse(&text).map_err(|source| AppError::Schedule {
                    function: name.to_string(),
                    source,
                })?;
                trigger = Some(Trigger::Timer {
                    name: binding_name,
                    schedule,
                    run_on_startup: b
                        .get("runOnStartup")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
            "eventHubTrigger" => {
                let hub = prop("eventHubName")?
                    .ok_or_else(|| fail("eventHubTrigger without eventHubName".into()))?;
                if b.get("cardinality")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.eq_ignore_ascii_case("many"))
                {
                    return Err(fail(
                        "devhost supports eventHubTrigger with cardinality many only".into(),
                    ));
                }
                trigger = Some(Trigger::EventHub {
                    name: binding_name,
                    hub: check_name(&hub).map_err(fail)?,
                    consumer_group: prop("consumerGroup")?.unwrap_or_else(|| "$Default".into()),
                    connection: prop("connection")?.unwrap_or_default(),
                });
            }
            "http" => outputs.push(Output::Http { name: binding_name }),
            "eventHub" => {
                let hub = prop("eventHubName")?
                    .ok_or_else(|| fail("eventHub output without eventHubName".into()))?;
                outputs.push(Output::EventHub {
                    name: binding_name,
                    hub: check_name(&hub).map_err(fail)?,
                });
            }
            other if kind.ends_with("Trigger") => {
                return Err(fail(format!(
                    "trigger type {other} is not supported by devhost"
                )))
            }
            other => {
                return Err(fail(format!(
                    "binding type {other:?} is not supported by devhost"
                )))
            }
        }
    }
    let trigger = trigger.ok_or_else(|| fail("no trigger binding".into()))?;
    let retry = match json.get("retry") {
        Some(r) => Some(parse_retry(r).map_err(fail)?),
        None => None,
    };
    let forwarded = forwarding
        && matches!(trigger, Trigger::Http { .. })
        && bindings.len() == 2
        && matches!(outputs.as_slice(), [Output::Http { .. }]);
    Ok(FunctionDef {
        name: name.to_string(),
        trigger,
        outputs,
        retry,
        forwarded,
    })
}

fn http_trigger(
    function: &str,
    binding_name: &str,
    b: &Map<String, Value>,
    prop: &dyn Fn(&str) -> Result<Option<String>, AppError>,
) -> Result<Trigger, AppError> {
    let route_text = prop("route")?.unwrap_or_else(|| function.to_string());
    let route = RouteTemplate::parse(&route_text).map_err(|source| AppError::Route {
        function: function.to_string(),
        source,
    })?;
    let methods = b
        .get("methods")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_uppercase)
                .collect()
        })
        .unwrap_or_default();
    let auth = match prop("authLevel")?
        .unwrap_or_else(|| "function".into())
        .to_ascii_lowercase()
        .as_str()
    {
        "anonymous" => AuthLevel::Anonymous,
        "function" => AuthLevel::Function,
        "admin" | "system" => AuthLevel::Admin,
        other => {
            return Err(AppError::Function {
                function: function.to_string(),
                message: format!("unknown authLevel {other:?}"),
            })
        }
    };
    Ok(Trigger::Http {
        name: binding_name.to_string(),
        route,
        methods,
        auth,
    })
}

fn parse_retry(json: &Value) -> Result<RetryPolicy, String> {
    let span = |key: &str| -> Result<Duration, String> {
        let text = json
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("retry policy needs {key}"))?;
        timespan::parse(text).ok_or_else(|| format!("retry {key} {text:?} is not a TimeSpan"))
    };
    let max_retry_count = json
        .get("maxRetryCount")
        .and_then(Value::as_i64)
        .ok_or("retry policy needs maxRetryCount")?;
    let strategy = match json.get("strategy").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("fixedDelay") => {
            RetryStrategy::Fixed(span("delayInterval")?)
        }
        Some(s) if s.eq_ignore_ascii_case("exponentialBackoff") => RetryStrategy::Exponential {
            min: span("minimumInterval")?,
            max: span("maximumInterval")?,
        },
        other => return Err(format!("unknown retry strategy {other:?}")),
    };
    Ok(RetryPolicy {
        max_retry_count,
        strategy,
    })
}

/// Hub names become folder names: keep them to what Event Hubs allows anyway.
fn check_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "event hub name {name:?} has characters other than letters, digits, - . _"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("EVENTHUB_NAME".to_string(), "clickstream".to_string()),
            (
                "EVENTHUB_CONSUMER_GROUP".to_string(),
                "$Default".to_string(),
            ),
            (
                "MAINTENANCE_SCHEDULE".to_string(),
                "0 7 * * * *".to_string(),
            ),
        ])
    }

    #[test]
    fn resolves_settings() {
        let v = settings();
        assert_eq!(resolve("%EVENTHUB_NAME%", &v).unwrap(), "clickstream");
        assert_eq!(
            resolve("x-%EVENTHUB_NAME%-y", &v).unwrap(),
            "x-clickstream-y"
        );
        assert_eq!(resolve("plain", &v).unwrap(), "plain");
        assert!(resolve("%MISSING%", &v).unwrap_err().contains("MISSING"));
        assert!(resolve("%EVENTHUB_NAME", &v).is_err());
    }

    #[test]
    fn timer_schedule_from_a_setting() {
        let json = json!({"bindings": [{"type": "timerTrigger", "name": "timer", "direction": "in",
            "schedule": "%MAINTENANCE_SCHEDULE%", "runOnStartup": true}]});
        let f = parse_function("maintenance", &json, &settings(), true).unwrap();
        let Trigger::Timer {
            schedule,
            run_on_startup,
            ..
        } = f.trigger
        else {
            panic!("not a timer")
        };
        assert!(run_on_startup);
        assert_eq!(schedule.to_string(), "0 7 * * * *");
        let bad =
            json!({"bindings": [{"type": "timerTrigger", "name": "timer", "schedule": "%NOPE%"}]});
        assert!(parse_function("m", &bad, &settings(), true)
            .unwrap_err()
            .to_string()
            .contains("NOPE"));
    }

    #[test]
    fn forwarding_only_for_plain_http_functions() {
        let plain = json!({"bindings": [
            {"type": "httpTrigger", "name": "req", "direction": "in", "authLevel": "anonymous", "route": "v1/{*rest}"},
            {"type": "http", "name": "res", "direction": "out"}]});
        let with_hub = json!({"bindings": [
            {"type": "httpTrigger", "name": "req", "direction": "in", "authLevel": "anonymous", "methods": ["post"], "route": "collect"},
            {"type": "http", "name": "res", "direction": "out"},
            {"type": "eventHub", "name": "outEvents", "direction": "out", "eventHubName": "%EVENTHUB_NAME%", "connection": "C"}]});
        assert!(
            parse_function("reports", &plain, &settings(), true)
                .unwrap()
                .forwarded
        );
        assert!(
            !parse_function("reports", &plain, &settings(), false)
                .unwrap()
                .forwarded
        );
        let collect = parse_function("collect", &with_hub, &settings(), true).unwrap();
        assert!(!collect.forwarded);
        assert_eq!(
            collect.outputs[1],
            Output::EventHub {
                name: "outEvents".into(),
                hub: "clickstream".into()
            }
        );
    }

    #[test]
    fn retry_policies() {
        let p = parse_retry(
            &json!({"strategy": "exponentialBackoff", "maxRetryCount": -1,
            "minimumInterval": "00:00:05", "maximumInterval": "00:05:00"}),
        )
        .unwrap();
        assert!(p.allows(1_000_000));
        assert_eq!(p.delay(1), Duration::from_secs(5));
        assert_eq!(p.delay(3), Duration::from_secs(20));
        assert_eq!(p.delay(40), Duration::from_secs(300));
        let f = parse_retry(
            &json!({"strategy": "fixedDelay", "maxRetryCount": 2, "delayInterval": "00:00:01"}),
        )
        .unwrap();
        assert!(f.allows(2) && !f.allows(3));
        assert_eq!(f.delay(2), Duration::from_secs(1));
        assert!(parse_retry(&json!({"strategy": "linear", "maxRetryCount": 1})).is_err());
    }

    #[test]
    fn loads_the_project_app_root() {
        // The repository's own app root: the spec devhost must accept as is.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let keys = BTreeMap::from([(FUNCTION_KEY_SETTING.to_string(), "k".to_string())]);
        let app = App::load(&root, &keys, &BTreeMap::new()).unwrap();
        let names: Vec<&str> = app.functions.iter().map(|f| f.name.as_str()).collect();
        assert!(
            names.contains(&"collect")
                && names.contains(&"ingest")
                && names.contains(&"maintenance")
        );
        assert!(!names.contains(&"handler"));
        assert_eq!(app.hub_names(), vec!["clickstream".to_string()]);
        assert_eq!(app.host.route_prefix, "api");
        assert_eq!(app.host.event_hubs.max_batch, 1000);
        assert_eq!(app.host.event_hubs.min_batch, 100);
        assert_eq!(app.host.event_hubs.max_wait, Duration::from_secs(5));
        let ingest = app.function("ingest").unwrap();
        assert_eq!(ingest.retry.as_ref().map(|r| r.max_retry_count), Some(-1));
        assert!(app.check_keys().is_ok());
        assert!(names.contains(&"rollup"));
    }

    #[test]
    fn defaults_fill_gaps_and_overrides_replace_values() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let defaults = BTreeMap::from([
            (
                "DATABASE_URL".to_string(),
                "postgres://default/db".to_string(),
            ),
            ("ONLY_A_DEFAULT".to_string(), "d".to_string()),
        ]);
        let overrides = BTreeMap::from([("EVENTHUB_NAME".to_string(), "other-hub".to_string())]);
        let app = App::load(&root, &defaults, &overrides).unwrap();
        assert_ne!(app.values["DATABASE_URL"], "postgres://default/db");
        assert_eq!(app.values["ONLY_A_DEFAULT"], "d");
        // %EVENTHUB_NAME% in the bindings resolves to the overriding value.
        assert_eq!(app.hub_names(), vec!["other-hub".to_string()]);
    }
}
