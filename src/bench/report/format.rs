//! Human formatting of durations, sizes, ratios and rates, with three significant digits.

/// `v` with three significant digits: 1.23, 12.3, 123, 1234, 0.0123.
fn sig3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    // Rounding can carry into a new digit (9.996 -> "10.00"): one decimal fewer then.
    let carried = s
        .parse::<f64>()
        .is_ok_and(|r| r.abs() >= 10f64.powi(magnitude + 1));
    if carried && decimals > 0 {
        let d = decimals - 1;
        return format!("{v:.d$}");
    }
    s
}

/// 0.0000852 -> "85.2 µs"; 1.5 -> "1.50 s".
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "-".into();
    }
    let a = secs.abs();
    if a >= 1.0 {
        format!("{} s", sig3(secs))
    } else if a >= 1e-3 {
        format!("{} ms", sig3(secs * 1e3))
    } else if a >= 1e-6 {
        format!("{} µs", sig3(secs * 1e6))
    } else {
        format!("{} ns", sig3(secs * 1e9))
    }
}

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// 4096 -> "4 KiB"; 1073741824 -> "1 GiB"; 1536 -> "1.50 KiB".
pub fn size(bytes: u64) -> String {
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v.fract() == 0.0 {
        format!("{} {}", v as u64, UNITS[unit])
    } else {
        format!("{} {}", sig3(v), UNITS[unit])
    }
}

/// Bytes per second: "1.17 GiB/s".
pub fn rate(bytes_per_sec: f64) -> String {
    if !bytes_per_sec.is_finite() || bytes_per_sec <= 0.0 {
        return "-".into();
    }
    let mut v = bytes_per_sec;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}/s", sig3(v), UNITS[unit])
}

/// 1.234 -> "1.23x"; None -> "-".
pub fn ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{}x", sig3(r)),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_unit_and_three_digits() {
        assert_eq!(duration(0.0000852), "85.2 µs");
        assert_eq!(duration(1.5), "1.50 s");
        assert_eq!(duration(0.123456), "123 ms");
        assert_eq!(duration(0.0012345), "1.23 ms");
        assert_eq!(duration(4.2e-8), "42.0 ns");
        assert_eq!(duration(123.4), "123 s");
        assert_eq!(duration(f64::NAN), "-");
    }

    #[test]
    fn rounding_carry_keeps_three_digits() {
        assert_eq!(sig3(9.996), "10.0");
        assert_eq!(sig3(99.97), "100");
    }

    #[test]
    fn sizes_are_binary() {
        assert_eq!(size(4096), "4 KiB");
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(64 << 20), "64 MiB");
        assert_eq!(size(1536), "1.50 KiB");
        assert_eq!(size(10), "10 B");
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(rate(1.25 * 1024.0 * 1024.0 * 1024.0), "1.25 GiB/s");
        assert_eq!(rate(0.0), "-");
        assert_eq!(ratio(Some(1.0)), "1.00x");
        assert_eq!(ratio(Some(12.345)), "12.3x");
        assert_eq!(ratio(None), "-");
        assert_eq!(ratio(Some(0.0034)), "0.00340x");
    }
}
