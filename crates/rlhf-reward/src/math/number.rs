//! Numbers as they are written in final answers (`1,234`, `-0.5`, `3/4`, `\frac{1}{2}`, `50%`),
//! parsed exactly where possible so that `0.5`, `1/2` and `\frac{1}{2}` compare equal.

/// A parsed number. Integers, decimals and fractions of them are exact (a reduced fraction);
/// only exponents and fractions of huge values fall back to floating point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// `num / den`, reduced, `den > 0`.
    Exact {
        num: i128,
        den: i128,
    },
    Float(f64),
}

/// A number and whether it was written as a percentage (`50%` is `Number 50`, `percent: true`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Parsed {
    pub value: Number,
    pub percent: bool,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

impl Number {
    pub fn ratio(num: i128, den: i128) -> Option<Number> {
        if den == 0 {
            return None;
        }
        let g = gcd(num, den).max(1);
        let sign = if den < 0 { -1 } else { 1 };
        Some(Number::Exact { num: sign * (num / g), den: sign * (den / g) })
    }

    pub fn to_f64(self) -> f64 {
        match self {
            Number::Exact { num, den } => num as f64 / den as f64,
            Number::Float(x) => x,
        }
    }

    fn neg(self) -> Number {
        match self {
            Number::Exact { num, den } => Number::Exact { num: -num, den },
            Number::Float(x) => Number::Float(-x),
        }
    }

    fn div(self, other: Number) -> Option<Number> {
        if let (Number::Exact { num: a, den: b }, Number::Exact { num: c, den: d }) = (self, other) {
            if let (Some(n), Some(m)) = (a.checked_mul(d), b.checked_mul(c)) {
                return Number::ratio(n, m);
            }
        }
        let q = self.to_f64() / other.to_f64();
        q.is_finite().then_some(Number::Float(q))
    }

    /// The value of a percentage as a fraction (`50` → `0.5`).
    pub fn percent_of(self) -> Number {
        self.div(Number::Exact { num: 100, den: 1 }).unwrap_or(Number::Float(self.to_f64() / 100.0))
    }
}

/// Equality of two answers: exact for two integers (no rounding of big values), otherwise
/// `|a − b| ≤ rel_tol · max(|a|, |b|)`, so `0.333333333333` matches `1/3` at `rel_tol = 1e-9`.
pub fn numbers_equal(a: Number, b: Number, rel_tol: f64) -> bool {
    if let (Number::Exact { num: n1, den: 1 }, Number::Exact { num: n2, den: 1 }) = (a, b) {
        return n1 == n2;
    }
    if a == b {
        return true;
    }
    let (x, y) = (a.to_f64(), b.to_f64());
    x == y || (x - y).abs() <= rel_tol * x.abs().max(y.abs())
}

/// Drops LaTeX spacing and wrappers that do not change a value: `$…$`, `\(…\)`, `\!`, `\,`,
/// `\left`/`\right`, `{,}` thousands separators, `\text{…}` around units, and spaces.
pub fn clean_latex(s: &str) -> String {
    let mut t = s.trim().to_string();
    for (from, to) in [
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\ ", ""),
        ("{,}", ","),
        ("\\left", ""),
        ("\\right", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\(", ""),
        ("\\)", ""),
        ("\\[", ""),
        ("\\]", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("−", "-"),
    ] {
        t = t.replace(from, to);
    }
    t.retain(|c| !c.is_whitespace());
    t.trim_end_matches('.').to_string()
}

/// Parses a whole string as one number (after [`clean_latex`]); `None` if anything is left over.
pub fn parse_number(s: &str) -> Option<Parsed> {
    let t = clean_latex(s);
    let (t, percent) = match t.strip_suffix("\\%").or_else(|| t.strip_suffix('%')) {
        Some(rest) => (rest, true),
        None => (t.as_str(), false),
    };
    parse_signed(t).map(|value| Parsed { value, percent })
}

fn parse_signed(t: &str) -> Option<Number> {
    if let Some(rest) = t.strip_prefix('-') {
        return parse_unsigned(rest).map(Number::neg);
    }
    parse_unsigned(t.strip_prefix('+').unwrap_or(t))
}

fn parse_unsigned(t: &str) -> Option<Number> {
    if let Some(rest) = t.strip_prefix("\\frac") {
        let (num, rest) = frac_arg(rest)?;
        let (den, rest) = frac_arg(rest)?;
        return if rest.is_empty() { parse_signed(num)?.div(parse_signed(den)?) } else { None };
    }
    if let Some((a, b)) = t.split_once('/') {
        return parse_decimal(a)?.div(parse_decimal(b)?);
    }
    parse_decimal(t)
}

/// One `\frac` argument: `{…}` without nested braces, or a single digit (`\frac12`).
fn frac_arg(t: &str) -> Option<(&str, &str)> {
    if let Some(rest) = t.strip_prefix('{') {
        let end = rest.find('}')?;
        let inner = &rest[..end];
        (!inner.contains('{')).then_some((inner, &rest[end + 1..]))
    } else {
        let c = t.chars().next()?;
        c.is_ascii_digit().then_some((&t[..1], &t[1..]))
    }
}

/// `1234`, `1,234,567.5` (groups of exactly three), `.5`, `2.`, `1e-3`.
fn parse_decimal(t: &str) -> Option<Number> {
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(t[i + 1..].parse::<i32>().ok()?)),
        None => (t, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int = strip_thousands(int)?;
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(e) = exponent {
        let x: f64 = format!("{}.{}e{e}", if int.is_empty() { "0" } else { &int }, frac).parse().ok()?;
        return x.is_finite().then_some(Number::Float(x));
    }
    let digits = format!("{int}{frac}");
    match (digits.parse::<i128>(), 10i128.checked_pow(frac.len() as u32)) {
        (Ok(num), Some(den)) => Number::ratio(num, den),
        _ => format!("{int}.{frac}").parse().ok().map(Number::Float),
    }
}

fn strip_thousands(int: &str) -> Option<String> {
    if !int.contains(',') {
        return Some(int.to_string());
    }
    let mut groups = int.split(',');
    let first = groups.next()?;
    let ok = (1..=3).contains(&first.len()) && groups.all(|g| g.len() == 3);
    ok.then(|| int.replace(',', ""))
}
