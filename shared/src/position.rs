//! A position in a stream partition, compared exactly as a number.
//!
//! Event Hubs sequence numbers and Kafka offsets fit an `i64`; Kinesis sequence numbers are
//! decimal strings of up to 129 digits, larger than any integer type. Both are held here, and
//! stored as PostgreSQL `numeric` (migration V9), which holds either exactly and orders them as
//! numbers.
//!
//! The representation is canonical: a value that fits an `i64` is always [`Position::Int`]'s
//! inner form, so equality and hashing are structural and the common case costs an integer
//! comparison.

use bytes::{BufMut, BytesMut};
use postgres_types::{FromSql, IsNull, ToSql, Type};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Most digits of a position: Kinesis documents sequence numbers of up to 129 digits.
pub const MAX_DIGITS: usize = 129;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Position(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Int(i64),
    /// Decimal digits without leading zeros, of a value above `i64::MAX`.
    Big(Box<str>),
}

/// Text that is not a position: not a non-negative decimal integer of at most
/// [`MAX_DIGITS`] digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream position (a decimal integer of at most {MAX_DIGITS} digits)")]
pub struct BadPosition;

impl Position {
    /// "Nothing stored yet": below every position a stream hands out.
    pub const NONE: Position = Position(Repr::Int(-1));

    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            Repr::Int(n) => Some(n),
            Repr::Big(_) => None,
        }
    }

    /// The next position, if this one fits an `i64` and is not its largest value (used only to
    /// notice gaps in streams whose positions are contiguous).
    pub fn successor(&self) -> Option<Position> {
        self.as_i64()?.checked_add(1).map(Position::from)
    }
}

impl From<i64> for Position {
    fn from(n: i64) -> Self {
        Position(Repr::Int(n))
    }
}

impl FromStr for Position {
    type Err = BadPosition;

    /// Non-negative decimal digits (leading zeros allowed); `-1` is [`Position::NONE`].
    fn from_str(s: &str) -> Result<Self, BadPosition> {
        if s == "-1" {
            return Ok(Position::NONE);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadPosition);
        }
        let digits = s.trim_start_matches('0');
        if digits.len() > MAX_DIGITS {
            return Err(BadPosition);
        }
        Ok(match digits.parse::<i64>() {
            Ok(n) => Position(Repr::Int(n)),
            Err(_) if digits.is_empty() => Position(Repr::Int(0)),
            Err(_) => Position(Repr::Big(digits.into())),
        })
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Int(a), Repr::Int(b)) => a.cmp(b),
            // A big value is above every i64.
            (Repr::Int(_), Repr::Big(_)) => Ordering::Less,
            (Repr::Big(_), Repr::Int(_)) => Ordering::Greater,
            // No leading zeros: more digits is larger; equal lengths compare as text.
            (Repr::Big(a), Repr::Big(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        }
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Int(n) => write!(f, "{n}"),
            Repr::Big(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A JSON number when it fits an `i64` (as the reports have always shown Event Hubs and Kafka
/// positions), otherwise a string of its digits (a JSON number that large loses precision in
/// most readers).
impl Serialize for Position {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Int(n) => s.serialize_i64(*n),
            Repr::Big(d) => s.serialize_str(d),
        }
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Int(i64),
            Text(String),
        }
        match Wire::deserialize(d)? {
            Wire::Int(n) => Ok(Position::from(n)),
            Wire::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The decimal digits of a non-negative value, or of -1.
fn digits_of(p: &Position) -> (bool, std::borrow::Cow<'_, str>) {
    match &p.0 {
        Repr::Int(n) if *n < 0 => (true, n.unsigned_abs().to_string().into()),
        Repr::Int(n) => (false, n.to_string().into()),
        Repr::Big(s) => (false, std::borrow::Cow::Borrowed(s)),
    }
}

const NUMERIC_NEG: u16 = 0x4000;

/// PostgreSQL's binary `numeric`: digit count, weight, sign, display scale (all 16-bit), then
/// base-10000 digits, most significant first; the value is the sum of digit[i] times
/// 10000^(weight - i).
impl ToSql for Position {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let (negative, digits) = digits_of(self);
        let digits = digits.trim_start_matches('0');
        let bytes = digits.as_bytes();
        let lead = bytes.len() % 4;
        let mut groups: Vec<i16> = Vec::with_capacity(bytes.len() / 4 + 1);
        let value = |chunk: &[u8]| {
            chunk
                .iter()
                .fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0'))
        };
        if lead > 0 {
            groups.push(value(&bytes[..lead]));
        }
        for chunk in bytes[lead..].chunks(4) {
            groups.push(value(chunk));
        }
        let weight = groups.len() as i16 - 1;
        // Trailing zero groups are implied by the weight.
        while groups.last() == Some(&0) {
            groups.pop();
        }
        out.put_i16(groups.len() as i16);
        out.put_i16(if groups.is_empty() { 0 } else { weight });
        out.put_u16(if negative { NUMERIC_NEG } else { 0 });
        out.put_u16(0);
        for g in groups {
            out.put_i16(g);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    postgres_types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Position {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let field = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
            raw.get(i * 2..i * 2 + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "numeric value is truncated".into())
        };
        let ndigits = field(0)? as usize;
        let weight = field(1)? as i16;
        let sign = field(2)?;
        let scale = field(3)?;
        if ndigits > 0 && (weight < 0 || (weight as usize) + 1 < ndigits) {
            return Err("a stream position must be an integer".into());
        }
        if sign != 0 && sign != NUMERIC_NEG {
            return Err("a stream position must be a finite number".into());
        }
        let _ = scale;
        let mut text = String::with_capacity(ndigits * 4 + 1);
        for i in 0..ndigits {
            let g = field(4 + i)?;
            if i == 0 {
                text.push_str(&g.to_string());
            } else {
                text.push_str(&format!("{g:04}"));
            }
        }
        if ndigits == 0 {
            text.push('0');
        } else {
            for _ in ndigits..=weight as usize {
                text.push_str("0000");
            }
        }
        if sign == NUMERIC_NEG {
            return match text.parse::<i64>() {
                Ok(n) => Ok(Position::from(-n)),
                Err(_) => Err("a negative stream position out of range".into()),
            };
        }
        text.parse::<Position>().map_err(Into::into)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Position {
        s.parse().unwrap()
    }

    #[test]
    fn compares_as_numbers_across_sizes() {
        let kinesis = "49590338271490256608559692538361571095921575989136588898";
        let mut list = [
            p(kinesis),
            Position::NONE,
            p("9223372036854775808"),
            p("9223372036854775807"),
            p("0"),
            p("49590338271490256608559692538361571095921575989136588899"),
            p("100000000000000000000000000000000000000000000000000000000"),
            p("7"),
        ];
        list.sort();
        let text: Vec<String> = list.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "-1",
                "0",
                "7",
                "9223372036854775807",
                "9223372036854775808",
                kinesis,
                "49590338271490256608559692538361571095921575989136588899",
                "100000000000000000000000000000000000000000000000000000000",
            ]
        );
    }

    #[test]
    fn canonical_form_makes_equal_values_equal() {
        assert_eq!(p("000123"), Position::from(123));
        assert_eq!(p("00009223372036854775808"), p("9223372036854775808"));
        assert_eq!(p("0000"), Position::from(0));
        assert_eq!(p(&"9".repeat(129)).to_string().len(), 129);
        for bad in ["", "-2", "1.5", "+1", " 1", "1e9", &"9".repeat(130)] {
            assert_eq!(bad.parse::<Position>(), Err(BadPosition), "{bad:?}");
        }
    }

    #[test]
    fn numeric_binary_round_trip() {
        for s in [
            "-1",
            "0",
            "1",
            "10000",
            "100000000",
            "9999",
            "123456789012",
            "9223372036854775807",
            "9223372036854775808",
            "49590338271490256608559692538361571095921575989136588898",
            &"9".repeat(129),
            &format!("1{}", "0".repeat(128)),
        ] {
            let position = p(s);
            let mut buf = BytesMut::new();
            position.to_sql(&Type::NUMERIC, &mut buf).unwrap();
            let back = Position::from_sql(&Type::NUMERIC, &buf).unwrap();
            assert_eq!(back, position, "{s}");
        }
    }

    #[test]
    fn json_is_a_number_when_it_fits() {
        assert_eq!(serde_json::to_string(&Position::from(42)).unwrap(), "42");
        let big = p("9223372036854775808");
        assert_eq!(
            serde_json::to_string(&big).unwrap(),
            "\"9223372036854775808\""
        );
        assert_eq!(
            serde_json::from_str::<Position>("\"9223372036854775808\"").unwrap(),
            big
        );
        assert_eq!(
            serde_json::from_str::<Position>("42").unwrap(),
            Position::from(42)
        );
    }
}
