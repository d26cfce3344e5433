//! Values as people write them: durations (`500ms`, `5s`, `2m`, `1h`),
//! byte sizes (`64KiB`, `4MiB`), counts and addresses. Pure text → value,
//! shared by the daemon's settings and the command line's options.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
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

/// An address block, `10.0.0.0/8` or `::1/128`; a bare address is a block
/// of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(v: &str) -> Result<Cidr, String> {
        let bad = || format!("{v:?} is not an address block like 10.0.0.0/8 or ::1/128");
        let (a, p) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(bad)?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the block; an IPv4-mapped IPv6 peer counts as its
    /// IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip.to_canonical() {
                IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((net, nw), (mine, mw)) = (bits(self.addr), bits(ip));
        if nw != mw {
            return false;
        }
        let keep = u32::from(self.prefix);
        let mask = if keep == 0 {
            0
        } else {
            u128::MAX << (128 - keep)
        };
        net & mask == mine & mask
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A command line split as a shell splits words, without expanding
/// anything: spaces separate, `"…"` and `'…'` quote, `\` escapes.
pub fn split_words(v: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = v.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                let n = chars.next().ok_or("a trailing backslash")?;
                cur.push(n);
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                in_word = false;
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
        if quote.is_some() {
            in_word = true;
        }
    }
    if quote.is_some() {
        return Err("an unclosed quote".into());
    }
    if in_word || !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

/// A list written with commas or spaces between its items.
pub fn parse_list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
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

    #[test]
    fn address_blocks() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/", "::1/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_list("a, b  c,,"), ["a", "b", "c"]);
        assert_eq!(
            split_words(r#"muster agent --label "pool=a b" -- sh -c 'echo $HOME' x\ y """#)
                .unwrap(),
            [
                "muster",
                "agent",
                "--label",
                "pool=a b",
                "--",
                "sh",
                "-c",
                "echo $HOME",
                "x y",
                ""
            ]
        );
        assert!(split_words("a 'b").is_err());
    }
}
