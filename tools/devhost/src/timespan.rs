//! .NET `TimeSpan` strings as used in host.json and retry policies (`"00:00:05"`, `"1.02:00:00"`).

use std::time::Duration;

/// Parses `[d.]hh:mm:ss[.fraction]`; answers `None` for anything else.
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (days, rest) = match text.split_once('.') {
        // A dot before the first colon separates days; a dot after it is the fraction.
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let mut parts = rest.split(':');
    let hours: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let seconds_text = parts.next()?;
    if parts.next().is_some() || hours > 23 || minutes > 59 {
        return None;
    }
    let seconds: f64 = seconds_text.parse().ok()?;
    if !(0.0..60.0).contains(&seconds) {
        return None;
    }
    let whole = days * 86_400 + hours * 3_600 + minutes * 60;
    Some(Duration::from_secs(whole) + Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_json_forms() {
        assert_eq!(parse("00:00:05"), Some(Duration::from_secs(5)));
        assert_eq!(parse("00:05:00"), Some(Duration::from_secs(300)));
        assert_eq!(parse("00:10:00"), Some(Duration::from_secs(600)));
        assert_eq!(parse("1.02:00:00"), Some(Duration::from_secs(93_600)));
        assert_eq!(parse("00:00:00.250"), Some(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse("5s"), None);
        assert_eq!(parse("00:61:00"), None);
        assert_eq!(parse("00:00"), None);
        assert_eq!(parse(""), None);
    }
}
