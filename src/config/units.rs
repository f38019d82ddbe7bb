//! Durations (`250ms`, `5s`, `1.5m`, `2h`) and sizes (`512`, `64KiB`, `10MB`) as written in
//! the config file.
//!
//! Part of config loading (read → parse with positions → env substitution → structural
//! deserialise → semantic validation → typed `Config`): `validate.rs` calls these on every
//! duration and size string. Both parsers are strict on purpose: a unit is required on a
//! duration (a bare `5` could mean seconds or milliseconds, and guessing wrong is an outage),
//! units are case-sensitive, and whitespace is not allowed, so every accepted spelling means
//! exactly one thing. Errors carry the offending text so a message can quote it.

use std::time::Duration;

/// The longest duration accepted anywhere in the config. Anything longer is almost
/// certainly a unit mistake (`5h` meant as `5s` is caught by range checks elsewhere, but
/// `100000h` is caught here).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000 * NANOS_PER_MS;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    #[error("invalid duration {text:?}: expected a number followed by ms, s, m or h")]
    Malformed { text: String },
    #[error("invalid duration {text:?}: a unit is required, e.g. \"{text}s\" or \"{text}ms\"")]
    MissingUnit { text: String },
    #[error("invalid duration {text:?}: a duration cannot be negative")]
    Negative { text: String },
    #[error("invalid duration {text:?}: longer than the maximum of one year")]
    TooLong { text: String },
}

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeError {
    #[error(
        "invalid size {text:?}: expected a whole number of bytes, optionally followed by \
         B, KB, MB, GB (1000-based) or KiB, MiB, GiB (1024-based)"
    )]
    Malformed { text: String },
    #[error("invalid size {text:?}: too large")]
    Overflow { text: String },
}

/// Parse `<number><unit>` where the number is decimal digits with an optional fraction
/// (`1.5s`) and the unit is `ms`, `s`, `m` or `h`. Precision is kept in integer nanoseconds,
/// so `0.1s` is exactly 100ms (no float rounding).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed {
        text: text.to_string(),
    };
    if let Some(magnitude) = text.strip_prefix('-') {
        // Only call it negative when the rest is a real duration; `-abc` is just malformed,
        // and so is `--5s` (checked without recursing, so a long run of `-` cannot overflow
        // the stack).
        if !magnitude.starts_with('-') && parse_duration(magnitude).is_ok() {
            return Err(DurationError::Negative {
                text: text.to_string(),
            });
        }
        return Err(malformed());
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit_nanos = match unit {
        "ms" => NANOS_PER_MS,
        "s" => NANOS_PER_S,
        "m" => 60 * NANOS_PER_S,
        "h" => 3600 * NANOS_PER_S,
        "" if !number.is_empty() && parse_decimal(number, 1).is_some() => {
            return Err(DurationError::MissingUnit {
                text: text.to_string(),
            })
        }
        _ => return Err(malformed()),
    };
    let too_long = || DurationError::TooLong {
        text: text.to_string(),
    };
    let nanos = parse_decimal(number, unit_nanos).ok_or_else(malformed)?;
    let nanos = nanos.ok_or_else(too_long)?;
    if nanos > MAX_DURATION.as_nanos() {
        return Err(too_long());
    }
    let secs = u64::try_from(nanos / NANOS_PER_S).map_err(|_| too_long())?;
    // The remainder is < 1e9 by construction, so it always fits a u32.
    let subsec = u32::try_from(nanos % NANOS_PER_S).map_err(|_| too_long())?;
    Ok(Duration::new(secs, subsec))
}

/// `digits[.digits]` times `scale`, in integer arithmetic.
///
/// Returns `None` when the text is not such a number, `Some(None)` when it is but the result
/// overflows (which the caller reports as "too long", not "malformed").
fn parse_decimal(number: &str, scale: u128) -> Option<Option<u128>> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    let mut value: Option<u128> = Some(0);
    for digit in whole.bytes() {
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u128::from(digit - b'0')));
    }
    let Some(whole_value) = value else {
        return Some(None);
    };
    let Some(mut total) = whole_value.checked_mul(scale) else {
        return Some(None);
    };
    if let Some(fraction) = fraction {
        // Digits past the 18th are below a nanosecond for every unit we have (the largest,
        // `h`, is 3.6e12 ns), so they are ignored rather than risking u128 overflow.
        let kept = &fraction[..fraction.len().min(18)];
        let mut numerator: u128 = 0;
        for digit in kept.bytes() {
            numerator = numerator * 10 + u128::from(digit - b'0');
        }
        let denominator = 10u128.pow(kept.len() as u32);
        let Some(sum) = total.checked_add(numerator * scale / denominator) else {
            return Some(None);
        };
        total = sum;
    }
    Some(Some(total))
}

/// Parse a byte size: a whole number with an optional unit. `B`, `KB`, `MB`, `GB` are powers
/// of 1000 and `KiB`, `MiB`, `GiB` powers of 1024, as in IEC 80000-13; a bare number is bytes.
/// Fractions are not accepted: a size is a count of bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, SizeError> {
    let malformed = || SizeError::Malformed {
        text: text.to_string(),
    };
    let number_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    if number.is_empty() {
        return Err(malformed());
    }
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(malformed()),
    };
    let overflow = || SizeError::Overflow {
        text: text.to_string(),
    };
    // Only digits remain, so the one way `parse` can fail is a value beyond u64.
    let value: u64 = number.parse().map_err(|_| overflow())?;
    value.checked_mul(multiplier).ok_or_else(overflow)
}

/// Render a byte count the way a user would write it (`64KiB`, `10MiB`, `1500`), for
/// messages that mention a default or a limit.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (factor, unit) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("0.5ms"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
    }

    #[test]
    fn every_whole_number_in_every_unit_parses_exactly() {
        let units: [(&str, u64); 4] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];
        for n in (0..=1000u64).chain([59, 60, 61, 3599, 3600, 86_400]) {
            for (unit, millis) in units {
                let text = format!("{n}{unit}");
                let expected = Duration::from_millis(n * millis);
                if expected <= MAX_DURATION {
                    assert_eq!(parse_duration(&text), Ok(expected), "{text}");
                } else {
                    assert_eq!(
                        parse_duration(&text),
                        Err(DurationError::TooLong { text: text.clone() }),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn fractions_match_their_integer_spelling() {
        for tenths in 0..=200u64 {
            let text = format!("{}.{}s", tenths / 10, tenths % 10);
            assert_eq!(
                parse_duration(&text),
                Ok(Duration::from_millis(tenths * 100)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_their_text() {
        let malformed = [
            "", "s", "ms", "5 sec", "5sec", "5 s", " 5s", "5s ", "5S", "5d", "5us", "1m30s", ".5s",
            "5.s", "1..5s", "+5s", "five", "5e3ms", "0x10s", "5", "1.5",
        ];
        for text in malformed {
            let err = parse_duration(text).expect_err(text);
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
            assert!(!matches!(
                err,
                DurationError::Negative { .. } | DurationError::TooLong { .. }
            ));
        }
        assert_eq!(
            parse_duration("5 sec").map_err(|e| e.to_string()),
            Err(r#"invalid duration "5 sec": expected a number followed by ms, s, m or h"#.into())
        );
        assert_eq!(
            parse_duration("5"),
            Err(DurationError::MissingUnit { text: "5".into() })
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Negative { text: "-1s".into() })
        );
        assert_eq!(
            parse_duration("8761h"),
            Err(DurationError::TooLong {
                text: "8761h".into()
            })
        );
        let huge = format!("{}h", "9".repeat(60));
        assert_eq!(
            parse_duration(&huge),
            Err(DurationError::TooLong { text: huge.clone() })
        );
    }

    #[test]
    fn junk_never_panics() {
        // A small deterministic generator over the characters that matter to the parsers.
        let alphabet: Vec<char> = "0123456789.-+ msSkKiBMGbh\u{e9}".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64: enough variety for a fuzz-style smoke test, and reproducible.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let len = (next() % 12) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(d) = parse_duration(&text) {
                assert!(d <= MAX_DURATION, "{text}");
            }
            let _ = parse_size(&text);
        }
    }

    #[test]
    fn sizes_in_each_unit() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("1GiB"), Ok(1_073_741_824));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("3KB"), Ok(3000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(&u64::MAX.to_string()), Ok(u64::MAX));
    }

    #[test]
    fn every_size_in_every_unit_parses_exactly() {
        let units: [(&str, u64); 7] = [
            ("", 1),
            ("B", 1),
            ("KB", 1000),
            ("MB", 1_000_000),
            ("GB", 1_000_000_000),
            ("KiB", 1024),
            ("MiB", 1 << 20),
        ];
        for n in 0..=2048u64 {
            for (unit, factor) in units {
                let text = format!("{n}{unit}");
                assert_eq!(parse_size(&text), Ok(n * factor), "{text}");
            }
            assert_eq!(parse_size(&format_size(n * 1024)), Ok(n * 1024));
        }
    }

    #[test]
    fn bad_sizes_are_rejected_with_their_text() {
        for text in [
            "", "KiB", "1.5MiB", "64 KiB", "64kib", "64kb", "1TiB", "-1", "+1", "1e3", "ten",
            "64KiBs", " 1",
        ] {
            let err = parse_size(text).expect_err(text);
            assert_eq!(err, SizeError::Malformed { text: text.into() });
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
        for text in [
            "18446744073709551616",
            "17179869184GiB",
            "99999999999999999999999KB",
        ] {
            assert_eq!(
                parse_size(text),
                Err(SizeError::Overflow { text: text.into() })
            );
        }
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(64 * 1024), "64KiB");
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1500), "1500");
        assert_eq!(format_size(0), "0");
    }

    use proptest::prelude::*;

    const DURATION_UNITS: [(&str, u128); 4] = [
        ("ms", NANOS_PER_MS),
        ("s", NANOS_PER_S),
        ("m", 60 * NANOS_PER_S),
        ("h", 3600 * NANOS_PER_S),
    ];

    const SIZE_UNITS: [(&str, u64); 8] = [
        ("", 1),
        ("B", 1),
        ("KB", 1000),
        ("MB", 1000 * 1000),
        ("GB", 1000 * 1000 * 1000),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
    ];

    /// Long runs of one piece (`-`, digits, `.`) between a prefix and a unit: the shapes that
    /// stress recursion, overflow handling and error formatting.
    fn runs() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["", "-", "+", "5", ".5", "1", "0"]),
            prop::sample::select(vec!["-", "9", "0", ".", "5", "-5", "9."]),
            0..4096usize,
            prop::sample::select(vec!["", "s", "ms", "m", "h", "B", "KiB", "GiB", "x"]),
        )
            .prop_map(|(head, piece, count, unit)| format!("{head}{}{unit}", piece.repeat(count)))
    }

    fn junk() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9.+ -]{0,30}(ms|s|m|h|B|KB|MB|GB|KiB|MiB|GiB|)",
            runs(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(text in junk()) {
            // Either a value within the documented range, or an error quoting the text.
            let quoted = format!("{text:?}");
            match parse_duration(&text) {
                Ok(d) => prop_assert!(d <= MAX_DURATION, "{}", text),
                Err(e) => prop_assert!(e.to_string().contains(&quoted), "{}", e),
            }
            if let Err(e) = parse_size(&text) {
                prop_assert!(e.to_string().contains(&quoted), "{}", e);
            }
        }

        #[test]
        fn whole_durations_are_exact_or_too_long(
            n in prop_oneof![0..=10_000u64, 0..=40_000_000_000u64, any::<u64>()],
            unit in 0..DURATION_UNITS.len(),
        ) {
            let (suffix, unit_nanos) = DURATION_UNITS[unit];
            let text = format!("{n}{suffix}");
            let nanos = u128::from(n) * unit_nanos;
            if nanos <= MAX_DURATION.as_nanos() {
                let nanos = u64::try_from(nanos).expect("a year of nanoseconds fits");
                prop_assert_eq!(parse_duration(&text), Ok(Duration::from_nanos(nanos)));
                let negative = format!("-{text}");
                prop_assert_eq!(
                    parse_duration(&negative),
                    Err(DurationError::Negative { text: negative.clone() })
                );
            } else {
                prop_assert_eq!(parse_duration(&text), Err(DurationError::TooLong { text: text.clone() }));
            }
        }

        #[test]
        fn numbers_longer_than_any_integer_are_too_long(
            digits in "[1-9][0-9]{19,60}",
            fraction in "(\\.[0-9]{1,30})?",
            unit in 0..DURATION_UNITS.len(),
        ) {
            let text = format!("{digits}{fraction}{}", DURATION_UNITS[unit].0);
            prop_assert_eq!(parse_duration(&text), Err(DurationError::TooLong { text: text.clone() }));
        }

        #[test]
        fn formatted_durations_parse_back_exactly(
            nanos in 0..=u64::try_from(MAX_DURATION.as_nanos()).expect("fits"),
        ) {
            let d = Duration::from_nanos(nanos);
            let seconds = format!("{}.{:09}s", d.as_secs(), d.subsec_nanos());
            prop_assert_eq!(parse_duration(&seconds), Ok(d));
            let millis = format!("{}.{:06}ms", nanos / 1_000_000, nanos % 1_000_000);
            prop_assert_eq!(parse_duration(&millis), Ok(d));
        }

        #[test]
        fn fractions_are_truncated_to_nanoseconds_never_rounded_up(
            whole in 0..=10_000u64,
            fraction in "[0-9]{1,18}",
            unit in 0..DURATION_UNITS.len(),
        ) {
            let (suffix, unit_nanos) = DURATION_UNITS[unit];
            let text = format!("{whole}.{fraction}{suffix}");
            // The exact value is `exact / scale` nanoseconds.
            let scale = 10u128.pow(fraction.len() as u32);
            let exact = (u128::from(whole) * scale + fraction.parse::<u128>().expect("digits"))
                * unit_nanos;
            match parse_duration(&text) {
                Ok(d) => {
                    let got = d.as_nanos();
                    prop_assert!(got * scale <= exact && exact < (got + 1) * scale, "{} -> {:?}", text, d);
                }
                Err(e) => {
                    prop_assert_eq!(e, DurationError::TooLong { text: text.clone() });
                    prop_assert!(exact / scale > MAX_DURATION.as_nanos(), "{}", text);
                }
            }
        }

        #[test]
        fn sizes_are_exact_or_overflow_never_wrap(
            n in prop_oneof![0..=4096u64, 0..=(1u64 << 40), any::<u64>()],
            unit in 0..SIZE_UNITS.len(),
        ) {
            let (suffix, factor) = SIZE_UNITS[unit];
            let text = format!("{n}{suffix}");
            match n.checked_mul(factor) {
                Some(bytes) => {
                    prop_assert_eq!(parse_size(&text), Ok(bytes));
                    // And its formatted form means the same number of bytes.
                    prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
                }
                None => prop_assert_eq!(parse_size(&text), Err(SizeError::Overflow { text: text.clone() })),
            }
        }

        #[test]
        fn numbers_longer_than_u64_overflow(
            digits in "[1-9][0-9]{20,60}",
            unit in 0..SIZE_UNITS.len(),
        ) {
            let text = format!("{digits}{}", SIZE_UNITS[unit].0);
            prop_assert_eq!(parse_size(&text), Err(SizeError::Overflow { text: text.clone() }));
        }

        #[test]
        fn format_size_round_trips(
            bytes in prop_oneof![any::<u64>(), (any::<u64>(), 1..=3u32).prop_map(|(n, k)| n << (10 * k))],
        ) {
            let text = format_size(bytes);
            prop_assert_eq!(parse_size(&text), Ok(bytes), "{}", text);
            // The largest exact binary unit: the number in front is not a multiple of 1024
            // unless no larger unit exists.
            let number: u64 = text.trim_end_matches(char::is_alphabetic).parse().expect("a number");
            prop_assert!(!number.is_multiple_of(1024) || number == 0 || text.ends_with("GiB"), "{}", text);
        }
    }
}
