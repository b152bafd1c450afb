//! Reads the vectors of a `GET /v1/objects` answer in one pass before serde reads the rest.
//! A page is megabytes of decimal floats, and serde_json's general number path was the largest
//! share of the daemon's CPU per page (bench/RESULTS.md); the vectors are plain arrays of
//! numbers, which need far less. Each array is swapped for its index into the lifted vectors,
//! and the caller checks that every index landed in a vector field: anything else (a property
//! that happens to be called `vector`) makes it read the original answer with serde alone.

use memchr::memmem;

/// An answer with each vector array replaced by its index in `vectors`.
pub(super) struct Lifted {
    pub text: Vec<u8>,
    pub vectors: Vec<Vec<f32>>,
}

/// The arrays under the keys `vector` (legacy layout) and `default` (named layout), or None
/// when there are none. Only compact JSON (`"vector":[`) is recognised; any other spelling is
/// left to serde, as is an array holding anything but numbers.
pub(super) fn lift(bytes: &[u8]) -> Option<Lifted> {
    let mut text = Vec::with_capacity(bytes.len() / 8);
    let mut vectors = Vec::new();
    let mut copied = 0;
    for at in memmem::find_iter(bytes, b"\":[") {
        // `at` is the key's closing quote; a vector array starts after `":[`.
        if at < copied || !is_vector_key(&bytes[..at]) {
            continue;
        }
        let dimension = vectors.last().map_or(0, Vec::len);
        let Some((vector, len)) = numbers(&bytes[at + 3..], dimension) else {
            continue;
        };
        text.extend_from_slice(&bytes[copied..at + 2]);
        text.extend_from_slice(vectors.len().to_string().as_bytes());
        vectors.push(vector);
        copied = at + 3 + len;
    }
    if vectors.is_empty() {
        return None;
    }
    text.extend_from_slice(&bytes[copied..]);
    Some(Lifted { text, vectors })
}

/// Whether `head` ends with a key `"vector` or `"default` that opens an object member: the
/// quote before it is preceded by `{` or `,`, which rules out text inside a string (where
/// quotes are escaped).
fn is_vector_key(head: &[u8]) -> bool {
    [&b"\"vector"[..], b"\"default"].iter().any(|key| {
        head.strip_suffix(*key)
            .and_then(|rest| rest.trim_ascii_end().last())
            .is_some_and(|c| matches!(c, b'{' | b','))
    })
}

/// The numbers of an array whose `[` is already consumed, and the length up to and with its
/// `]`; `dimension` is the length expected.
fn numbers(s: &[u8], dimension: usize) -> Option<(Vec<f32>, usize)> {
    let mut out = Vec::with_capacity(dimension);
    let mut i = skip_ws(s, 0);
    if s.get(i) == Some(&b']') {
        return Some((out, i + 1));
    }
    loop {
        i = skip_ws(s, i);
        let (value, len) = number(&s[i..])?;
        out.push(value);
        i = skip_ws(s, i + len);
        match s.get(i)? {
            b',' => i += 1,
            b']' => return Some((out, i + 1)),
            _ => return None,
        }
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t'))
    {
        i += 1;
    }
    i
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// One JSON number at the head of `s` as serde_json reads it into an f32 (the double nearest
/// the decimal, then rounded to f32), and its length; None if it is not a JSON number or is
/// beyond a double's range.
fn number(s: &[u8]) -> Option<(f32, usize)> {
    let mut i = usize::from(s.first() == Some(&b'-'));
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let int_start = i;
    while let Some(d) = s.get(i).filter(|c| c.is_ascii_digit()) {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        digits += 1;
        i += 1;
    }
    // JSON: at least one digit, and no leading zero before another digit.
    if i == int_start || (s[int_start] == b'0' && i - int_start > 1) {
        return None;
    }
    let mut exponent: i64 = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while let Some(d) = s.get(i).filter(|c| c.is_ascii_digit()) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            digits += 1;
            i += 1;
        }
        if i == frac_start {
            return None;
        }
        exponent -= (i - frac_start) as i64;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_start = i;
        let mut e: i64 = 0;
        while let Some(d) = s.get(i).filter(|c| c.is_ascii_digit()) {
            e = e.saturating_mul(10).saturating_add(i64::from(d - b'0'));
            i += 1;
        }
        if i == exp_start {
            return None;
        }
        exponent = exponent.saturating_add(if negative { -e } else { e });
    }
    let negative = s[0] == b'-';
    // serde_json takes an integer of up to 19 digits as an integer and converts it straight
    // to f32 (a negative one through i64, which rounds the same way).
    if i == int_start + digits && digits <= 19 && (!negative || (1..=1 << 63).contains(&mantissa)) {
        let value = mantissa as f32;
        return Some((if negative { -value } else { value }, i));
    }
    if digits <= 19 && exponent.unsigned_abs() < 23 {
        let (m, pow) = (mantissa as f64, POW10[exponent.unsigned_abs() as usize]);
        let near = if exponent < 0 { m / pow } else { m * pow };
        let near = if negative { -near } else { near };
        // Exact when the digits fit a double's 53 bits and the power of ten is exact: one
        // correctly rounded operation (Clinger's fast path), which is also serde_json's.
        if mantissa < (1 << 53) {
            return Some((near as f32, i));
        }
        // Two roundings (the digits, then the division) leave `near` within 2^-52 of the
        // decimal, relatively; `slack` is twice that. Unless an f32 rounding boundary lies
        // that close, every reading of the decimal, serde_json's included, rounds to the same
        // f32. Widened f32s printed with 17 digits, as Python prints them, take this path.
        let slack = near.abs() * f64::EPSILON * 2.0;
        let (low, high) = ((near - slack) as f32, (near + slack) as f32);
        if low == high {
            return Some((low, i));
        }
    }
    // Anything else takes std's parser, which rounds correctly where serde_json may be an
    // ulp of the double off.
    let value = std::str::from_utf8(&s[..i]).ok()?.parse::<f64>().ok()?;
    // serde_json refuses a number beyond a double's range: so does this, by leaving it to it.
    if !value.is_finite() {
        return None;
    }
    Some((value as f32, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_f32(text: &str) -> f32 {
        serde_json::from_str::<f32>(text).expect("a number")
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "1e-7",
            "1.5E+3",
            "2e38",
            "3.4028235e38",
            "1e39",
            "-1e-46",
            "1.17549435e-38",
            "0.000012345678",
            "123456789012345678901234567890",
            "0.10000000149011612",
            "9007199254740993",
            "1e22",
            "1e23",
            "4.9406564584124654e-324",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20_000 {
            let x = (rng.f32() - 0.5) * 10f32.powi(rng.i32(-12..4));
            // As Upkeep and Weaviate (Go) print an f32, and as Python prints it widened.
            texts.push(serde_json::to_string(&x).expect("f32"));
            texts.push(format!("{}", f64::from(x)));
            texts.push(format!("{:e}", x));
        }
        for text in &texts {
            let (value, len) = number(text.as_bytes()).expect(text);
            assert_eq!(len, text.len(), "{text}");
            assert_eq!(value.to_bits(), serde_f32(text).to_bits(), "{text}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "1e+", "+1", "-x"] {
            assert!(
                number(bad.as_bytes()).is_none_or(|(_, len)| len < bad.len()),
                "{bad} is not a JSON number"
            );
        }
    }

    #[test]
    fn lifts_only_arrays_of_numbers_under_vector_keys() {
        let answer = br#"{"objects":[{"id":"a","properties":{"text":"say \"vector\":[1,2]"},"vector":[0.5, -1e-7 ,2]},{"id":"b","vectors":{"default":[],"other":[1]}},{"id":"c","vector":["x"]}]}"#;
        let lifted = lift(answer).expect("two arrays");
        assert_eq!(lifted.vectors, vec![vec![0.5, -1e-7, 2.0], vec![]]);
        assert_eq!(
            String::from_utf8(lifted.text).expect("utf-8"),
            r#"{"objects":[{"id":"a","properties":{"text":"say \"vector\":[1,2]"},"vector":0},{"id":"b","vectors":{"default":1,"other":[1]}},{"id":"c","vector":["x"]}]}"#
        );
        assert!(lift(br#"{"objects":[{"id":"a","properties":{}}]}"#).is_none());
        assert!(lift(br#"{"vector":[01]}"#).is_none());
    }
}
