//! Seeded arithmetic tasks for tests, examples and the quickstart: problems with known answers,
//! responses in a well-formatted style and in bad ones, right and wrong, written as datasets of
//! every kind (SFT, preference pairs, rankings, prompts with answers).

mod files;
mod responses;
mod sums;
mod verify;

pub use files::{write_arithmetic, ARITHMETIC_FILES};
pub use responses::{badly_formatted, number_words, well_formatted, wrong_answer};
pub use sums::{sum_problems, write_sum_prompts};
pub use verify::{extract_final_answer, is_correct, is_well_formatted};

use crate::error::{DataError, Result};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Add, Op::Sub, Op::Mul];

    pub fn apply(self, a: i64, b: i64) -> i64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
        }
    }

    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }
}

/// One problem and the four responses the datasets are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArithmeticProblem {
    pub a: i64,
    pub op: Op,
    pub b: i64,
    /// The user's message: `What is 23 + 45?` or a one-step word problem.
    pub question: String,
    pub answer: i64,
    /// Correct and well formatted (`23 + 45 = 68.\nThe answer is 68.`).
    pub correct_formatted: String,
    /// The correct number, badly formatted.
    pub correct_unformatted: String,
    /// A plausible wrong answer (never equal to `answer`).
    pub wrong_answer: i64,
    pub wrong_formatted: String,
    pub wrong_unformatted: String,
    /// The order the four responses above take in `rankings.jsonl`: `responses[j]` is response
    /// number `order[j]`, 0 = correct formatted … 3 = wrong unformatted.
    pub ranking_order: [usize; 4],
}

impl ArithmeticProblem {
    /// The four responses best first: correct+formatted, correct+unformatted, wrong+formatted,
    /// wrong+unformatted.
    pub fn responses_best_first(&self) -> [&str; 4] {
        [&self.correct_formatted, &self.correct_unformatted, &self.wrong_formatted, &self.wrong_unformatted]
    }
}

/// Problems in generation order; the first `train_len` are for training, the rest for
/// evaluation (prompts are unique, so the two never share a problem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArithmeticSet {
    pub problems: Vec<ArithmeticProblem>,
    pub train_len: usize,
}

impl ArithmeticSet {
    pub fn train(&self) -> &[ArithmeticProblem] {
        &self.problems[..self.train_len]
    }
    pub fn eval(&self) -> &[ArithmeticProblem] {
        &self.problems[self.train_len..]
    }
}

/// The most problems one set may hold: well inside the number of distinct prompts.
pub const MAX_ARITHMETIC_PROBLEMS: usize = 20_000;

/// `n` distinct problems from `seed` (the same seed gives the same set); 90% train, 10% eval.
pub fn generate_arithmetic(n: usize, seed: u64) -> Result<ArithmeticSet> {
    if n > MAX_ARITHMETIC_PROBLEMS {
        return Err(DataError::Invalid(format!(
            "{n} arithmetic problems requested; at most {MAX_ARITHMETIC_PROBLEMS} distinct ones are generated"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut problems = Vec::with_capacity(n);
    while problems.len() < n {
        let (a, op, b, question) = question(&mut rng);
        if !seen.insert(question.clone()) {
            continue;
        }
        let answer = op.apply(a, b);
        let (wrong, wrong_op) = wrong_answer(a, op, b, &mut rng);
        let mut ranking_order = [0, 1, 2, 3];
        ranking_order.shuffle(&mut rng);
        problems.push(ArithmeticProblem {
            a,
            op,
            b,
            question,
            answer,
            correct_formatted: well_formatted(a, op, b, answer),
            correct_unformatted: badly_formatted(a, op, b, answer, &mut rng),
            wrong_answer: wrong,
            wrong_formatted: well_formatted(a, wrong_op, b, wrong),
            wrong_unformatted: badly_formatted(a, wrong_op, b, wrong, &mut rng),
            ranking_order,
        });
    }
    Ok(ArithmeticSet { train_len: n - n / 10, problems })
}

const NAMES: [(&str, &str); 6] =
    [("Tom", "he"), ("Anna", "she"), ("Ravi", "he"), ("Mia", "she"), ("Leo", "he"), ("Sara", "she")];
const ITEMS: [&str; 6] = ["apples", "marbles", "stickers", "books", "pencils", "cookies"];

/// Operands, operation and the question: 70% bare expressions, 30% word problems.
fn question(rng: &mut ChaCha8Rng) -> (i64, Op, i64, String) {
    let op = Op::ALL[rng.random_range(0..3)];
    let (mut a, mut b) = match op {
        Op::Mul => (rng.random_range(2..=12), rng.random_range(2..=99)),
        _ => (rng.random_range(2..=99), rng.random_range(2..=99)),
    };
    if op == Op::Sub && a < b {
        std::mem::swap(&mut a, &mut b); // answers stay non-negative
    }
    if !rng.random_bool(0.3) {
        if op == Op::Mul && rng.random_bool(0.5) {
            std::mem::swap(&mut a, &mut b);
        }
        return (a, op, b, format!("What is {a} {} {b}?", op.symbol()));
    }
    let (name, pronoun) = *NAMES.choose(rng).unwrap_or(&NAMES[0]);
    let items = *ITEMS.choose(rng).unwrap_or(&ITEMS[0]);
    let second_form = rng.random_bool(0.5);
    let text = match (op, second_form) {
        (Op::Add, false) => {
            format!("{name} has {a} {items} and buys {b} more. How many {items} does {pronoun} have now?")
        }
        (Op::Add, true) => {
            format!("There are {a} {items} in a box and {b} more on the table. How many {items} are there in total?")
        }
        (Op::Sub, false) => {
            format!("{name} has {a} {items} and gives {b} away. How many {items} does {pronoun} have left?")
        }
        (Op::Sub, true) => {
            format!("A shelf holds {a} {items}. {name} takes {b} of them. How many {items} are left on the shelf?")
        }
        (Op::Mul, false) => {
            format!("{name} buys {a} bags with {b} {items} in each bag. How many {items} does {pronoun} buy in total?")
        }
        (Op::Mul, true) => {
            format!("{name} reads {b} pages a day for {a} days. How many pages does {pronoun} read in total?")
        }
    };
    (a, op, b, text)
}
