//! Verifiers for arithmetic answers: what number a response commits to, whether it ends in the
//! expected format, whether it is right.

/// The integer a response gives as its final answer, looked for in this order:
/// 1. the last line of the form `The answer is N.` (case-insensitive, final period optional);
/// 2. the last `#### N` (GSM8K's convention);
/// 3. the last `\boxed{N}`;
/// 4. the last integer anywhere in the text.
///
/// Only integers are recognised (`1,188` reads as 1188; `2.5` reads as 5 at step 4).
pub fn extract_final_answer(text: &str) -> Option<i64> {
    let from_lines = text.lines().rev().find_map(|line| {
        let line = line.trim();
        let prefix = "the answer is ";
        let head = line.get(..prefix.len())?;
        if !head.eq_ignore_ascii_case(prefix) {
            return None;
        }
        let (n, rest) = leading_integer(&line[prefix.len()..])?;
        matches!(rest.trim(), "" | ".").then_some(n)
    });
    from_lines
        .or_else(|| after_last(text, "####").and_then(|s| leading_integer(s.trim_start())).map(|(n, _)| n))
        .or_else(|| {
            let inner = after_last(text, "\\boxed{")?;
            let (n, rest) = leading_integer(inner.trim_start())?;
            rest.trim_start().starts_with('}').then_some(n)
        })
        .or_else(|| last_integer(text))
}

/// Whether the response's last non-empty line is exactly `The answer is N.` with an integer N.
pub fn is_well_formatted(text: &str) -> bool {
    let Some(last) = text.lines().rev().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    let Some(number) = last.strip_prefix("The answer is ").and_then(|r| r.strip_suffix('.')) else {
        return false;
    };
    let digits = number.strip_prefix('-').unwrap_or(number);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the response's final answer equals `answer` (an integer, possibly with thousands
/// commas); a non-integer reference answer never matches.
pub fn is_correct(text: &str, answer: &str) -> bool {
    match leading_integer(answer.trim()) {
        Some((expected, rest)) if rest.trim().is_empty() => extract_final_answer(text) == Some(expected),
        _ => false,
    }
}

fn after_last<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.rfind(marker).map(|i| &text[i + marker.len()..])
}

/// An integer at the start of `s` (optional `-`, digits, commas between digit groups) and the
/// text after it.
fn leading_integer(s: &str) -> Option<(i64, &str)> {
    let bytes = s.as_bytes();
    let negative = bytes.first() == Some(&b'-');
    let start = usize::from(negative);
    let mut end = start;
    let mut digits = String::new();
    while end < bytes.len() {
        match bytes[end] {
            b @ b'0'..=b'9' => digits.push(b as char),
            b',' if !digits.is_empty() && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) => {}
            _ => break,
        }
        end += 1;
    }
    let value: i64 = digits.parse().ok()?;
    Some((if negative { -value } else { value }, &s[end..]))
}

fn last_integer(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A minus sign counts when it touches the digits and does not follow a word ("x-5").
        let signed = i > 0 && bytes[i - 1] == b'-' && (i < 2 || !bytes[i - 2].is_ascii_alphanumeric());
        let start = if signed { i - 1 } else { i };
        if let Some((n, rest)) = leading_integer(&text[start..]) {
            found = Some(n);
            i = text.len() - rest.len();
        } else {
            i += 1; // digits too long for i64
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_order() {
        assert_eq!(extract_final_answer("23 + 45 = 68.\nThe answer is 68."), Some(68));
        assert_eq!(extract_final_answer("The answer is 3.\nNo wait.\nthe answer is -12"), Some(-12));
        // The answer line beats a later number, #### and \boxed.
        assert_eq!(extract_final_answer("The answer is 7.\n#### 8\n\\boxed{9} 10"), Some(7));
        assert_eq!(extract_final_answer("so 5 apples\n#### 1,188"), Some(1188));
        assert_eq!(extract_final_answer("we get \\boxed{ 42 } from 3 and 4"), Some(42));
        assert_eq!(extract_final_answer("it is 12, or maybe x-5 or -7, I think"), Some(-7));
        assert_eq!(extract_final_answer("sixty-eight"), None);
        assert_eq!(extract_final_answer("99999999999999999999999 and 3"), Some(3));
    }

    #[test]
    fn format_check() {
        assert!(is_well_formatted("1 + 2 = 3.\nThe answer is 3.\n"));
        assert!(is_well_formatted("The answer is -40."));
        assert!(!is_well_formatted("The answer is 3"));
        assert!(!is_well_formatted("The answer is 3.\nHope that helps!"));
        assert!(!is_well_formatted("The answer is three."));
        assert!(!is_well_formatted("The answer is ."));
        assert!(!is_well_formatted(""));
    }

    #[test]
    fn correctness() {
        assert!(is_correct("The answer is 1188.", "1,188"));
        assert!(is_correct("x\nThe answer is -3.", " -3 "));
        assert!(!is_correct("The answer is 4.", "5"));
        assert!(!is_correct("The answer is 4.", "4.5"));
        assert!(!is_correct("nothing here", "4"));
    }
}
