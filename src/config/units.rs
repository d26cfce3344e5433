//! Values as people write them: durations (`500ms`, `5s`, `2m`, `1h`),
//! byte sizes (`64KiB`, `4MiB`), counts and addresses. Pure text → value,
//! shared by the daemon's settings and the command line's options.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = v.parse() {
        return Ok(a);
    }
    // Allow `localhost:8080`; resolution is local, no network.
    v.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{v:?} is not an address like 127.0.0.1:8080"))
}

pub fn at_least(d: Duration, min_ms: u64) -> Result<Duration, String> {
    if d < Duration::from_millis(min_ms) {
        Err(format!("must be at least {min_ms}ms"))
    } else {
        Ok(d)
    }
}

pub fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be above zero".into())
    } else {
        Ok(d)
    }
}

/// `500ms`, `5s`, `2m`, `1h`, `1d`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a duration like 500ms, 5s, 2m or 1h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{v:?} has an unknown unit (ms, s, m, h, d)")),
    };
    if !secs.is_finite() || secs > 365.0 * 86400.0 {
        return Err(format!("{v:?} is longer than a year"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Show a duration as the shortest whole form: `500ms`, `5s`, `2m`, `1h`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub fn parse_count(v: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = v
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max}"));
    }
    Ok(n)
}

/// A byte size: `65536`, `64KiB`, `4MiB`, `1GiB` (K/M/G are binary too).
pub fn parse_size(v: &str, min: usize, max: usize) -> Result<usize, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{v:?} is not a size like 65536 or 4MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{v:?} has an unknown unit (KiB, MiB, GiB)")),
    };
    let n = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{v:?} is too large"))?;
    if n < min || n > max {
        return Err(format!("{v} is outside {min}..={max} bytes"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let table = [
            ("500ms", Some(500)),
            ("5s", Some(5000)),
            ("5", Some(5000)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("1.5s", Some(1500)),
            ("5x", None),
            ("", None),
            ("ms", None),
            ("-1s", None),
            ("400d", None),
        ];
        for (text, want) in table {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
        assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB", 1, usize::MAX), Ok(4 << 20));
        assert_eq!(parse_size("64k", 1, usize::MAX), Ok(65536));
        assert_eq!(parse_size("1000", 1, usize::MAX), Ok(1000));
        assert!(parse_size("4XB", 1, usize::MAX).is_err());
    }
}
