//! Response texts for arithmetic problems: the well-formatted style, several badly formatted
//! ones, and plausible wrong answers.

use super::Op;
use rand::Rng;

/// One short line of working, then exactly `The answer is N.`
pub fn well_formatted(a: i64, op: Op, b: i64, result: i64) -> String {
    format!("{a} {} {b} = {result}.\nThe answer is {result}.", op.symbol())
}

/// The same number without the final `The answer is N.` line: rambling, buried mid-sentence,
/// in words, or followed by chatter. All but the spelled-out one keep `n` as the last integer,
/// so a lenient verifier still reads the number.
pub fn badly_formatted(a: i64, op: Op, b: i64, n: i64, rng: &mut impl Rng) -> String {
    let s = op.symbol();
    match rng.random_range(0..6) {
        0 => format!("Hmm, let me think about {a} {s} {b}. I'm fairly sure it comes out to {n}, but I could be wrong about that."),
        1 => format!("That comes to {}.", number_words(n)),
        2 => format!("Working it out in my head: {a} {s} {b}, so roughly... {n}? Yes, {n}, I'm pretty sure."),
        3 => format!("The answer is {n}\nHope that helps, let me know if you need anything else!"),
        4 => format!("ok so {a} {s} {b}... carry the one... yeah, {n} is it. pretty easy one!"),
        _ => format!("Answer: {n}"),
    }
}

/// A plausible mistake that is never the true result: off by one, off by ten, swapped digits
/// or the wrong operation. Returns the wrong value and the operation its working line shows.
pub fn wrong_answer(a: i64, op: Op, b: i64, rng: &mut impl Rng) -> (i64, Op) {
    let truth = op.apply(a, b);
    for _ in 0..16 {
        let candidate = match rng.random_range(0..4) {
            0 => (truth + if rng.random_bool(0.5) { 1 } else { -1 }, op),
            1 => (truth + if rng.random_bool(0.5) { 10 } else { -10 }, op),
            2 => (swapped_digits(truth), op),
            _ => {
                let others: Vec<Op> = Op::ALL.into_iter().filter(|&o| o != op).collect();
                let other = others[rng.random_range(0..others.len())];
                (other.apply(a, b), other)
            }
        };
        if candidate.0 != truth && candidate.0 >= 0 {
            return candidate;
        }
    }
    (truth + 1, op)
}

/// `n` with its last two digits swapped (`68` → `86`); `n` itself when that changes nothing.
fn swapped_digits(n: i64) -> i64 {
    let mut digits: Vec<u8> = n.abs().to_string().into_bytes();
    let len = digits.len();
    if len < 2 {
        return n;
    }
    digits.swap(len - 1, len - 2);
    let swapped: i64 = String::from_utf8_lossy(&digits).parse().unwrap_or(n.abs());
    if n < 0 {
        -swapped
    } else {
        swapped
    }
}

/// English words for an integer (`-1188` → "minus one thousand one hundred eighty-eight").
pub fn number_words(n: i64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
    fn below_thousand(n: u64) -> String {
        let mut parts = Vec::new();
        if n >= 100 {
            parts.push(format!("{} hundred", ONES[(n / 100) as usize]));
        }
        let rest = n % 100;
        if rest >= 20 {
            let tens = TENS[(rest / 10) as usize];
            parts.push(match rest % 10 {
                0 => tens.to_string(),
                ones => format!("{tens}-{}", ONES[ones as usize]),
            });
        } else if rest > 0 || n == 0 {
            parts.push(ONES[rest as usize].to_string());
        }
        parts.join(" ")
    }
    let mut magnitude = n.unsigned_abs();
    let mut groups = Vec::new();
    for scale in ["", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion"] {
        let group = magnitude % 1000;
        if group > 0 || (magnitude == 0 && groups.is_empty()) {
            groups.push(format!("{}{scale}", below_thousand(group)));
        }
        magnitude /= 1000;
        if magnitude == 0 {
            break;
        }
    }
    groups.reverse();
    let words = groups.join(" ");
    if n < 0 {
        format!("minus {words}")
    } else {
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(number_words(0), "zero");
        assert_eq!(number_words(68), "sixty-eight");
        assert_eq!(number_words(1188), "one thousand one hundred eighty-eight");
        assert_eq!(number_words(-40), "minus forty");
        assert_eq!(number_words(2_000_005), "two million five");
        assert_eq!(number_words(i64::MIN).split(' ').next(), Some("minus"));
    }

    #[test]
    fn swapped() {
        assert_eq!(swapped_digits(68), 86);
        assert_eq!(swapped_digits(1188), 1188);
        assert_eq!(swapped_digits(7), 7);
        assert_eq!(swapped_digits(-12), -21);
    }
}
